import dagster as dg

from vq_assets.definitions import defs


def test_every_definition_loads():
    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "raw_videos",
        "watch_events",
        "video_watch_daily",
        "video_labels_7d",
        "creator_features",
    } <= names
    for job in defs.resolve_all_job_defs():
        assert job.name
    assert isinstance(defs.get_repository_def(), dg.RepositoryDefinition)
