"""The retrieval-augmented prior: each new video's nearest earlier videos' 7-day outcomes, a
feature group of the quality model (DESIGN §11)."""

import dataclasses

import dagster as dg

from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.related import prior as core
from vq_assets.defs.k8s import K8S_RETRIEVAL_PRIOR_TAGS
from vq_assets.partitions import PRIOR_CORPUS_DAYS, PRIOR_LABEL_DAYS, PRIOR_VIDEOS, daily
from vq_assets.resources import PUBLISH, DuckDBResource


class RetrievalPriorConfig(dg.Config):
    # Neighbours averaged per label.
    k: int = core.DEFAULT_K
    # Days of earlier videos searched (D-7-corpus_days .. D-8); at most PRIOR_CORPUS_DAYS, the
    # days the asset's inputs reach.
    corpus_days: int = PRIOR_CORPUS_DAYS
    # Softmax temperature of the similarity weights: large = the plain k-NN mean.
    temperature: float = core.DEFAULT_TEMPERATURE


@dg.asset(
    op_tags=K8S_RETRIEVAL_PRIOR_TAGS,
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="related",
    kinds={"duckdb", "parquet"},
    ins={
        "raw_videos": dg.AssetIn(partition_mapping=PRIOR_VIDEOS),
        "video_embeddings": dg.AssetIn(partition_mapping=PRIOR_VIDEOS),
        "video_labels_7d": dg.AssetIn(partition_mapping=PRIOR_LABEL_DAYS),
    },
    check_specs=[dg.AssetCheckSpec("point_in_time", asset="retrieval_prior", blocking=True)],
)
def retrieval_prior(
    context: dg.AssetExecutionContext,
    config: RetrievalPriorConfig,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
    video_labels_7d: PartitionFiles,
):
    """For every video created on D: the similarity-weighted 7-day outcomes of its k nearest
    earlier videos (cosine of the encoders' content vectors) among those created on
    D-7-corpus_days .. D-8, whose label windows closed before D began."""
    day = context.partition_key
    if not 1 <= config.corpus_days <= PRIOR_CORPUS_DAYS:
        raise dg.Failure(f"corpus_days must lie in [1, {PRIOR_CORPUS_DAYS}]: the inputs' reach")
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        video_embeddings.register(con, "embeddings")
        video_labels_7d.register(con, "labels", LABELS_SCHEMA)
        prior, summary = core.prior_for_day(
            con, day, corpus_days=config.corpus_days, k=config.k, temperature=config.temperature
        )
    leaks = core.point_in_time_violations(prior, day)
    yield dg.Output(
        prior,
        metadata={
            PUBLISH: leaks == 0,
            **dataclasses.asdict(summary),
            "label_days_read": len(video_labels_7d.days),
            "latest_label_day": video_labels_7d.days[-1] if video_labels_7d.days else "none",
        },
    )
    yield dg.AssetCheckResult(
        check_name="point_in_time",
        passed=leaks == 0,
        metadata={
            "rows_with_open_window_neighbours": leaks,
            "neighbours_before": core.cutoff(day).isoformat(),
        },
        description="Every neighbour was created on D-8 or earlier: its 7-day window had "
        "closed when D began.",
    )


defs = dg.Definitions(assets=[retrieval_prior])
