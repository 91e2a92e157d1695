"""Co-watch embeddings and related videos (DESIGN §11): co-watch pairs per event day, the weekly
CDML tower and its held-out evaluation, every new video's vector and related list."""

import shutil
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pyarrow as pa

from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.model import registry
from vq_assets.core.related import week as cdml_week
from vq_assets.core.related.cdml import CDMLConfig
from vq_assets.core.related.cowatch import (
    DEFAULT_MAX_VIDEOS_PER_USER,
    DEFAULT_WINDOW_MINUTES,
)
from vq_assets.core.related.cowatch import cowatch_pairs as cowatch_core
from vq_assets.core.related.search import DEFAULT_K, EXACT_MAX_CORPUS
from vq_assets.core.serving.flywheel import flagged_ids
from vq_assets.defs.config import config_from
from vq_assets.defs.k8s import K8S_TRAINING_TAGS
from vq_assets.defs.labels import skipped_without_events
from vq_assets.partitions import (
    CDML_CONTENT_WEEKS,
    COWATCH_WEEKS,
    RELATED_CORPUS,
    daily,
    weekly,
)
from vq_assets.resources import (
    DeviceResource,
    DuckDBResource,
    LakeResource,
    MlflowResource,
    vq_home,
)


class CowatchConfig(dg.Config):
    # Two qualifying views (>= 3 s) by one user at most this far apart form a co-watch.
    window_minutes: int = DEFAULT_WINDOW_MINUTES
    # Each user's first N qualifying views of the day count: a bot adds at most N(N-1)/2 pairs.
    max_videos_per_user: int = DEFAULT_MAX_VIDEOS_PER_USER


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="related",
    kinds={"duckdb", "parquet"},
    # A lake without watch events has none to read; checked below otherwise.
    ins={"watch_events": dg.AssetIn(metadata={"allow_missing": True})},
    # Not materialized on a lake without watch events: co-watch needs them.
    output_required=False,
)
def cowatch_pairs(
    context: dg.AssetExecutionContext,
    config: CowatchConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    watch_events: PartitionFiles,
):
    """Pairs of videos watched (>= 3 s) by the same user within `window_minutes` on event day
    E, with the number of users and co-views: one scan of E's events, heaviest users capped."""
    if skipped_without_events(context, lake, watch_events, "there is no co-watch"):
        return
    with duckdb.connect() as con:
        watch_events.register(con, "events")
        table = cowatch_core(
            con,
            context.partition_key,
            window_minutes=config.window_minutes,
            max_videos_per_user=config.max_videos_per_user,
        )
    videos = set(table.column("video_a").to_pylist()) | set(table.column("video_b").to_pylist())
    yield dg.Output(
        table,
        metadata={
            "pairs": table.num_rows,
            "videos_in_pairs": len(videos),
            "co_views": int(np.sum(table.column("co_views").to_numpy())),
        },
    )


def _corpus(duckdb: DuckDBResource, raw_videos: PartitionFiles, embeddings: PartitionFiles):
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        embeddings.register(con, "embeddings")
        return cdml_week.Corpus.from_table(cdml_week.content_rows(con))


# The tower's shape and training, field for field from core's CDMLConfig (in_dim comes from the
# data), plus the week's split.
CDMLModelConfig = config_from(
    "CDMLModelConfig",
    (CDMLConfig,),
    ("in_dim",),
    val_days=(int, 3),
    test_days=(int, 3),
)

CDML_INS = {
    "cowatch_pairs": dg.AssetIn(partition_mapping=COWATCH_WEEKS),
    "raw_videos": dg.AssetIn(partition_mapping=CDML_CONTENT_WEEKS),
    "video_embeddings": dg.AssetIn(partition_mapping=CDML_CONTENT_WEEKS),
}


def _epoch_logger(context: dg.AssetExecutionContext, epochs: int):
    def on_epoch(record: dict[str, float]) -> None:
        step = int(record["epoch"])
        mlflow.log_metrics({f"cdml_{k}": v for k, v in record.items() if k != "epoch"}, step=step)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")
        context.log.info(f"CDML epoch {step}/{epochs}: {shown}")

    return on_epoch


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="related",
    pool="gpu",
    op_tags=K8S_TRAINING_TAGS,
    kinds={"pytorch", "mlflow"},
    ins=CDML_INS,
)
def cdml_model(
    context: dg.AssetExecutionContext,
    config: CDMLModelConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    device: DeviceResource,
    mlflow_tracking: MlflowResource,
    cowatch_pairs: PartitionFiles,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
) -> dg.Output:
    """The CDML tower of week W: content -> 64-d unit vector, triplet loss with in-batch
    negatives on the co-watch of event days S-28..S-1 (the last `test_days` held out for
    `cdml_evaluation`, the `val_days` before them choose the epoch); logged to MLflow, the
    tower kept at <lake>/models/cdml/w=W/."""
    week, lk = context.partition_key, lake.get_lake()
    corpus = _corpus(duckdb, raw_videos, video_embeddings)
    dims = corpus.content.features.shape[1]
    cdml_config = config.to(CDMLConfig, in_dim=dims)
    # Kept until the week succeeds: a crashed run resumes from its last epoch.
    checkpoints = Path(vq_home(), "checkpoints", "cdml", week)
    with (
        registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root),
        mlflow.start_run(run_name=f"cdml-{week}") as run,
    ):
        registry.log_params({**config.model_dump(), "week": week, "in_dim": dims})
        fit = cdml_week.fit_week(
            corpus,
            cowatch_pairs.read(),
            week,
            cdml_config,
            val_days=config.val_days,
            test_days=config.test_days,
            checkpoint_dir=checkpoints,
            on_epoch=_epoch_logger(context, cdml_config.epochs),
            device=device.setup(),
        )
        tower_uri = cdml_week.save_week_tower(lk, week, fit.result.tower)
        shutil.rmtree(checkpoints, ignore_errors=True)
        mlflow.log_metrics({"cdml_best_val_recall": fit.result.best_recall})
        mlflow.set_tags({"vq.kind": "cdml", "vq.week": week})
    record = {
        "week": week,
        "tower_path": tower_uri,
        "mlflow_run_id": run.info.run_id,
        "best_epoch": fit.result.best_epoch,
        "best_val_recall": fit.result.best_recall,
        "train_pairs": fit.train_pairs,
        "val_pairs": fit.val_pairs,
        "val_days": config.val_days,
        "test_days": config.test_days,
        "videos": fit.videos,
        "videos_without_content": fit.videos_without_content,
    }
    return dg.Output(
        pa.Table.from_pylist([record]),
        metadata={
            **{k: v for k, v in record.items() if k not in ("tower_path",)},
            f"val_recall_at_{cdml_config.val_k}_by_epoch": dg.MetadataValue.json(
                [h.get(f"val_recall_at_{cdml_config.val_k}") for h in fit.history]
            ),
            "pairs_without_content": fit.pairs_without_content,
            "split": dg.MetadataValue.json(fit.split.__dict__),
            "tower_path": dg.MetadataValue.path(tower_uri),
            "in_dim": dims,
        },
    )


class CDMLEvaluationConfig(dg.Config):
    k: int = 20


@dg.asset(
    partitions_def=weekly,
    io_manager_key="lake_io",
    group_name="related",
    pool="gpu",
    op_tags=K8S_TRAINING_TAGS,
    kinds={"pytorch", "mlflow"},
    ins=CDML_INS,
)
def cdml_evaluation(
    context: dg.AssetExecutionContext,
    config: CDMLEvaluationConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    mlflow_tracking: MlflowResource,
    cdml_model: PartitionFiles,
    cowatch_pairs: PartitionFiles,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
) -> dg.Output:
    """recall@k and nDCG@k of realised co-watch on week W's held-out test days, for the new
    videos of those days ranked among the videos of the 28 days up to theirs: the CDML tower
    against cosine on the raw content vectors and against random vectors; on a simulated lake
    also the same-topic share of the top k. Logged to the tower's MLflow run."""
    week, lk = context.partition_key, lake.get_lake()
    record = cdml_model.read().to_pylist()[0]
    tower = cdml_week.load_week_tower(lk, week)
    corpus = _corpus(duckdb, raw_videos, video_embeddings)
    split = cdml_week.WeekSplit.of(week, record["val_days"], record["test_days"])
    table = cdml_week.evaluate_week(
        tower,
        corpus,
        cowatch_pairs.read(),
        split,
        k=config.k,
        exclude_ids=flagged_ids(lk, raw_videos.days),
        topics=cdml_week.truth_topics(lk, raw_videos.days),
    )
    rows = {r["method"]: r for r in table.to_pylist()}
    ratio = rows["cdml"]["recall"] / rows["content_cosine"]["recall"]
    with (
        registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root),
        mlflow.start_run(run_id=record["mlflow_run_id"]),
    ):
        for method, r in rows.items():
            mlflow.log_metrics(
                {
                    f"test_recall_at_{config.k}.{method}": r["recall"],
                    f"test_ndcg_at_{config.k}.{method}": r["ndcg"],
                    f"test_same_topic_share.{method}": r["same_topic_share"],
                }
            )
        mlflow.log_metric("test_recall_ratio_cdml_over_content", ratio)
        mlflow.log_table(table.to_pandas(), "cdml_evaluation.json")
    return dg.Output(
        table,
        metadata={
            "test_days": dg.MetadataValue.json(list(split.test)),
            "queries": rows["cdml"]["queries"],
            "recall_ratio_cdml_over_content": ratio,
            **{f"recall_at_{config.k}.{m}": r["recall"] for m, r in rows.items()},
            **{f"ndcg_at_{config.k}.{m}": r["ndcg"] for m, r in rows.items()},
            "table": dg.MetadataValue.md(cdml_week.metrics_markdown(table)),
        },
    )


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="related",
    kinds={"pytorch", "parquet"},
    deps=["cdml_model"],
)
def video_cdml_embeddings(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
) -> dg.Output:
    """Every video created on D with content gets its CDML vector the same day, from the
    tower of the latest week that started on or before D; videos without any content vector
    get none (counted)."""
    day, lk = context.partition_key, lake.get_lake()
    week, tower = cdml_week.current_tower(lk, day)
    corpus = _corpus(duckdb, raw_videos, video_embeddings)
    table = cdml_week.video_vectors(tower, corpus, week)
    return dg.Output(
        table,
        metadata={
            "videos": len(corpus.ids),
            "videos_without_content": corpus.content.missing,
            "model_week": week,
        },
    )


class RelatedConfig(dg.Config):
    k: int = DEFAULT_K
    # Exact search (matrix product) up to this many candidates; an HNSW index (faiss) above.
    exact_max_corpus: int = EXACT_MAX_CORPUS


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="related",
    kinds={"pytorch", "parquet"},
    deps=["cdml_model"],
    ins={
        "raw_videos": dg.AssetIn(partition_mapping=RELATED_CORPUS),
        "video_embeddings": dg.AssetIn(partition_mapping=RELATED_CORPUS),
    },
)
def related_videos(
    context: dg.AssetExecutionContext,
    config: RelatedConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
) -> dg.Output:
    """For every video created on D, its top-k related videos among those created in the 28
    days up to D (rank 1 = most related, score = cosine of CDML vectors); flagged videos and
    the video itself never appear. Videos without content get no list (counted)."""
    day, lk = context.partition_key, lake.get_lake()
    week, tower = cdml_week.current_tower(lk, day)
    corpus = _corpus(duckdb, raw_videos, video_embeddings)
    flagged = flagged_ids(lk, raw_videos.days)
    table, stats = cdml_week.related_for_day(
        tower,
        corpus,
        day,
        k=config.k,
        exclude_ids=flagged,
        exact_max_corpus=config.exact_max_corpus,
    )
    return dg.Output(
        table,
        metadata={
            "queries": stats.queries,
            "videos_without_content": stats.queries_without_content,
            "corpus": stats.corpus,
            "flagged_excluded": len(flagged),
            "search": stats.method,
            "model_week": week,
            "mean_score_rank_1": cdml_week.mean_top_score(table),
        },
    )


defs = dg.Definitions(
    assets=[cowatch_pairs, cdml_model, cdml_evaluation, video_cdml_embeddings, related_videos]
)
