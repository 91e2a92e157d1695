"""Co-watch embeddings through Dagster: cowatch_pairs, the weekly CDML tower and its evaluation,
every new video's vector and related list, replayed day by day on a simulated world."""

import datetime as dt

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.replay import Replay

FLAG_DAY = "2026-01-20"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    root = tmp_path_factory.mktemp("related") / "lake"
    home = tmp_path_factory.mktemp("home")
    start = dt.date.fromisoformat(START_DATE)
    simulate_local(root, start, 26, 40, seed=5, media=False)
    lake = Lake.local(root)
    videos = pq.read_table(lake.landing_dir("videos", FLAG_DAY))
    flagged = videos.column("video_id").to_pylist()[:3]
    lake.write_table(
        lake.landing_dir("video_flags", FLAG_DAY),
        pa.table({"video_id": flagged, "flagged": [True] * 3}),
    )
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("VQ_LAKE", str(root))
        env.setenv("VQ_HOME", str(home))
        defs = build_definitions()
        instance = dg.DagsterInstance.ephemeral()
        # No quality model (too few label days): the CDML side runs on its own schedule.
        replay = Replay(defs, instance, lake, train_days=28, min_train_days=99, log=lambda _: None)
        replay.run(START_DATE, "2026-01-26")
        yield lake, instance, set(flagged), home


def _read(lake: Lake, asset: str, day: str) -> pa.Table:
    return pq.read_table(lake.asset_file(asset, day))


def _metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
        limit=1,
    ).records
    return records[0].asset_materialization.metadata


def test_cowatch_pairs_every_event_day(replayed):
    lake, _, _, _ = replayed
    days = lake.list_days(lake.asset_dir("cowatch_pairs"))
    assert days[0] == START_DATE and days[-1] == "2026-01-26" and len(days) == 26
    pairs = _read(lake, "cowatch_pairs", "2026-01-10")
    assert pairs.num_rows > 0
    assert all(
        a < b
        for a, b in zip(pairs["video_a"].to_pylist(), pairs["video_b"].to_pylist(), strict=True)
    )
    assert set(pairs["event_day"].to_pylist()) == {dt.date(2026, 1, 10)}


def test_weekly_tower_is_trained_on_the_past_and_logged(replayed):
    lake, instance, _, home = replayed
    weeks = lake.list_days(lake.asset_dir("cdml_model"))
    assert weeks == ["2026-01-18", "2026-01-25"]  # 14+ event days of co-watch before each
    record = _read(lake, "cdml_model", "2026-01-25").to_pylist()[0]
    assert record["train_pairs"] > 0 and record["val_pairs"] > 0
    assert 1 <= record["best_epoch"] <= 10
    assert lake.exists(lake.path("models", "cdml", "w=2026-01-25", "cdml_tower.safetensors"))
    client = MlflowClient(registry.default_tracking_uri(str(home)))
    history = client.get_metric_history(record["mlflow_run_id"], "cdml_val_recall_at_20")
    assert [m.step for m in history] == list(range(1, 11))  # one point per epoch
    run = client.get_run(record["mlflow_run_id"])
    assert "test_recall_at_20.cdml" in run.data.metrics  # cdml_evaluation logs into it
    meta = _metadata(instance, "cdml_model", "2026-01-25")
    assert meta["split"].value["test"] == ["2026-01-22", "2026-01-24"]


def test_evaluation_beats_random_on_held_out_days(replayed):
    lake, instance, _, _ = replayed
    rows = {r["method"]: r for r in _read(lake, "cdml_evaluation", "2026-01-25").to_pylist()}
    assert set(rows) == {"cdml", "content_cosine", "random"}
    assert rows["cdml"]["queries"] > 0
    assert rows["cdml"]["recall"] > 2 * rows["random"]["recall"]
    assert rows["cdml"]["same_topic_share"] > rows["random"]["same_topic_share"]
    meta = _metadata(instance, "cdml_evaluation", "2026-01-25")
    assert meta["recall_ratio_cdml_over_content"].value == pytest.approx(
        rows["cdml"]["recall"] / rows["content_cosine"]["recall"]
    )


def test_every_new_video_with_content_gets_a_vector_and_a_list(replayed):
    lake, instance, flagged, _ = replayed
    days = lake.list_days(lake.asset_dir("related_videos"))
    assert days[0] == "2026-01-18" and days[-1] == "2026-01-26"  # from the first tower on
    for day in ("2026-01-21", "2026-01-26"):
        videos = pq.read_table(lake.landing_dir("videos", day))
        captions = videos["caption"].to_pylist()
        without = sum(1 for c in captions if c is None or not c.strip())  # no media here
        vectors = _read(lake, "video_cdml_embeddings", day)
        assert vectors.num_rows == videos.num_rows - without
        emb = np.stack(vectors["cdml_emb"].to_numpy(zero_copy_only=False))
        assert emb.shape[1] == 64
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
        assert _metadata(instance, "related_videos", day)["videos_without_content"].value == (
            without
        )

        related = _read(lake, "related_videos", day)
        assert set(related["video_id"].to_pylist()) == set(vectors["video_id"].to_pylist())
        ids, rel = related["video_id"].to_pylist(), related["related_video_id"].to_pylist()
        assert all(a != b for a, b in zip(ids, rel, strict=True))  # never itself
        assert not flagged & set(rel)  # guardrails
        # Candidates were created in the 28 days up to the day: ids carry their creation day.
        first = (dt.date.fromisoformat(day) - dt.timedelta(days=27)).strftime("%Y%m%d")
        assert all(first <= r[1:9] <= day.replace("-", "") for r in rel)
        for vid in set(ids[:200]):
            ranks = related.filter(pc.equal(related["video_id"], vid))["rank"]
            assert ranks.to_pylist() == list(range(1, len(ranks) + 1))
            assert len(ranks) <= 50
