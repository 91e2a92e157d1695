"""Serving: daily quality scores (the blending prior), flywheel weights, and their lift."""

import dataclasses
from typing import Literal

import dagster as dg
import numpy as np
import pyarrow as pa

from vq_assets.core.labels.windows import shift
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.model import registry, tasks
from vq_assets.core.model.features import joined_batches
from vq_assets.core.serving import flywheel
from vq_assets.core.serving.scores import score_batches
from vq_assets.partitions import daily, label_days
from vq_assets.resources import PUBLISH, DuckDBResource, LakeResource


class ScoringConfig(dg.Config):
    # Task name -> weight of its within-day z-score in the quality score; a task left out keeps
    # its catalogue default (core/model/tasks.py: skip_rate -1, avg_watch_time_s 0.5,
    # full_watches 0.5, skips -0.25).
    weights: dict[str, float] = {}
    # Videos featurised and predicted at once: bounds memory on a day of millions of videos.
    batch_rows: int = 50_000


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="serving",
    kinds={"pytorch", "parquet"},
    deps=["quality_model"],
    check_specs=[
        dg.AssetCheckSpec(
            "scores_complete_and_finite",
            asset="quality_scores",
            blocking=True,
            description="Every video of the day is scored, and every prediction of the tasks the "
            "model has is finite.",
        )
    ],
)
def quality_scores(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_embeddings: PartitionFiles,
    creator_features: PartitionFiles,
    retrieval_prior: PartitionFiles,
):
    """Predictions for every video created on D, by the model that was production as of D:
    the latest weekly model, trained on labels closed before its week began, that passed the
    promotion gate. Available the same day, long before the video's labels."""
    day, lk = context.partition_key, lake.get_lake()
    record = registry.production_as_of(lk, shift(day, 1))
    if record is None:
        raise dg.Failure(
            f"no promoted quality_model exists for a week starting on or before {day}: "
            "materialize quality_model for an earlier week first"
        )
    model = registry.load_record(lk, record)
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        video_embeddings.register(con, "embeddings")
        creator_features.register(con, "creator")
        retrieval_prior.register(con, "prior")
        videos = con.sql("SELECT count(*) FROM videos").fetchall()[0][0]
        # A model trained before the prior existed reads only its own groups (NetworkConfig).
        batches = joined_batches(
            con, with_labels=False, batch_rows=config.batch_rows, with_prior=True
        )
        scores = score_batches(batches, model, record.model_version, config.weights)
    have = [t for t in tasks.catalogue() if t.name in model.config.tasks]
    finite = all(np.isfinite(scores[t.prediction].to_numpy()).all() for t in have)
    complete = finite and scores.num_rows == videos
    skip_rate = scores["pred_skip_rate"].to_numpy()
    yield dg.Output(
        scores,
        metadata={
            PUBLISH: complete,
            "videos_scored": scores.num_rows,
            "videos_without_features": videos - scores.num_rows,
            "model_version": record.model_version,
            "model_week": record.week,
            "tasks_scored": ", ".join(t.name for t in have),
            "tasks_without_model_head": ", ".join(
                t.name for t in tasks.catalogue() if t.name not in model.config.tasks
            )
            or "none",
            "mean_pred_skip_rate": float(np.mean(skip_rate))
            if scores.num_rows and np.isfinite(skip_rate).all()
            else float("nan"),
        },
    )
    yield dg.AssetCheckResult(
        check_name="scores_complete_and_finite",
        passed=complete,
        metadata={"videos": videos, "scored": scores.num_rows, "finite": finite},
    )


class FlywheelConfig(dg.Config):
    # "exp": weights ∝ exp(quality_score / T). "thompson": one draw per video of
    # Normal(quality_score, quality_score_sd) (the ensemble members' spread), then the same
    # softmax, floor, cap and guardrails, so that videos the model is unsure about get explored.
    policy: Literal["exp", "thompson"] = "exp"
    # Thompson's RNG is seeded by (seed, partition day): a rerun of a day draws the same weights.
    seed: int = 0
    # Thompson's spread, in quality-score units, for a video without a quality_score_sd (a
    # single-network model has no member disagreement to measure); a warning says when it's used.
    fallback_sd: float = 0.5
    temperature: float = 1.0
    epsilon: float = 0.05
    creator_cap: float = 0.05
    # Guardrails: video ids never to sample, plus any `flagged` rows of
    # <lake>/landing/video_flags/dt=D/*.parquet (video_id, flagged).
    exclude_video_ids: list[str] = []


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="serving",
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec("weights_sum_to_one", asset="flywheel_sampling_weights", blocking=True)
    ],
)
def flywheel_sampling_weights(
    context: dg.AssetExecutionContext,
    config: FlywheelConfig,
    lake: LakeResource,
    quality_scores: PartitionFiles,
):
    """Cold-start sampling weights: exp(score / T) (or of a Thompson draw of the score from the
    ensemble's spread) mixed with an exploration floor, a per-creator cap on total mass, flagged
    and excluded videos at exactly 0 (DESIGN §7)."""
    day, lk = context.partition_key, lake.get_lake()
    scores = quality_scores.read()
    # Flagged videos join the exclusion list: the same guardrail list related_videos uses.
    excluded = flywheel.exclusions(
        scores["video_id"], None, [*config.exclude_video_ids, *flywheel.flagged_ids(lk, [day])]
    )
    sd = scores["quality_score_sd"] if "quality_score_sd" in scores.column_names else None
    drawn, policy = flywheel.policy_scores(
        config.policy,
        scores["quality_score"].to_numpy(),
        None if sd is None else sd.to_numpy(zero_copy_only=False),
        flywheel.day_seed(day, config.seed),
        config.fallback_sd,
    )
    if policy.get("videos_with_fallback_sd"):
        context.log.warning(f"thompson: no quality_score_sd for some videos, used: {policy}")
    weights, report = flywheel.sampling_weights(
        drawn,
        scores["creator_id"],
        temperature=config.temperature,
        epsilon=config.epsilon,
        creator_cap=config.creator_cap,
        excluded=excluded,
    )
    table = scores.select(["video_id", "creator_id", "quality_score", "model_version"])
    table = table.append_column("excluded", pa.array(excluded)).append_column(
        "sampling_weight", pa.array(weights, pa.float64())
    )
    total = float(weights.sum())
    valid = abs(total - 1.0) < 1e-9 and bool((weights[excluded] == 0).all())
    yield dg.Output(
        table,
        metadata={PUBLISH: valid, **dataclasses.asdict(report), **policy, "weight_sum": total},
    )
    yield dg.AssetCheckResult(
        check_name="weights_sum_to_one",
        passed=valid,
        metadata={"sum": total, "excluded_with_weight": int((weights[excluded] > 0).sum())},
    )


@dg.asset(
    partitions_def=label_days,
    io_manager_key="lake_io",
    group_name="serving",
    kinds={"parquet"},
)
def flywheel_lift(
    context: dg.AssetExecutionContext,
    flywheel_sampling_weights: PartitionFiles,
    video_labels_7d: PartitionFiles,
) -> dg.Output:
    """Once D's labels exist: the realised skip rate and watch time of a video drawn with the
    weights, against uniform sampling over the same eligible videos."""
    weights = flywheel_sampling_weights.read()
    labels = video_labels_7d.read(["video_id", "plays", "skip_rate", "avg_watch_time_s"])
    index = {v: i for i, v in enumerate(labels["video_id"].to_pylist())}
    rows = np.array([index.get(v, -1) for v in weights["video_id"].to_pylist()])

    def col(name: str) -> np.ndarray:
        values = labels[name].to_numpy(zero_copy_only=False).astype(float)
        return np.where(rows >= 0, values[np.maximum(rows, 0)], np.nan)

    lift = flywheel.flywheel_lift(
        weights["sampling_weight"].to_numpy(),
        col("skip_rate"),
        col("avg_watch_time_s"),
        col("plays"),
        excluded=weights["excluded"].to_numpy(zero_copy_only=False),
    )
    note = (
        "measured on the labelled eligible videos"
        if lift["videos_with_labels"]
        else "cannot measure lift: no eligible video has both a skip_rate and an "
        "avg_watch_time_s label (a source without those counters keeps them null)"
    )
    if not lift["videos_with_labels"]:
        context.log.warning(note)
    return dg.Output(
        pa.Table.from_pylist([{"day": context.partition_key, **lift}]),
        metadata={**lift, "note": note},
    )


defs = dg.Definitions(assets=[quality_scores, flywheel_sampling_weights, flywheel_lift])
