"""Scoring new videos: task predictions in natural units, the quality score, its percentile."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa

from vq_assets.core.model import tasks
from vq_assets.core.model.features import to_dataset
from vq_assets.core.model.inference import LoadedModel, predict_members
from vq_assets.core.model.popularity import CLASSES, PopularityScale
from vq_assets.core.serving.flywheel import percentile_within_day, quality_score, quality_score_sd

KEYS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("creator_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def score_videos(
    rows: pa.Table,
    model: LoadedModel,
    model_version: int,
    weights: Mapping[str, float] | None = None,
) -> pa.Table:
    """``score_batches`` of one table of rows."""
    return score_batches([rows], model, model_version, weights)


def score_batches(
    batches: Iterable[pa.Table],
    model: LoadedModel,
    model_version: int,
    weights: Mapping[str, float] | None = None,
) -> pa.Table:
    """One row per video of the `batches` (from `features.joined_rows`/`joined_batches`,
    unlabelled): every catalogue task's prediction column (null for a task the model left out),
    the 0-100 scores (percentile within the day), the popularity class and its 5 probabilities,
    the quality score, its percentile within the day, and ``quality_score_sd``, the ensemble
    members' spread of the quality score (null for a single-network model; see
    ``flywheel.quality_score_sd``).

    Features are built and predicted batch by batch, so memory holds one batch's embeddings;
    only the predictions of the whole day are kept, since the scores are relative to the day.
    Member predictions are kept (float32) only for the tasks that weigh in the score."""
    have = model.config.tasks
    weighted = {t for t, w in tasks.flywheel_weights(dict(weights or {})).items() if w} & set(have)
    members = model.config.shape.members
    ids: list[pa.Table] = []
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in have}
    member_chunks: dict[str, list[np.ndarray]] = {t: [] for t in weighted}
    for rows in batches:
        ids.append(rows.select(KEYS_SCHEMA.names).cast(KEYS_SCHEMA))
        if rows.num_rows:
            out = predict_members(model.model, model.normalizer, to_dataset(rows))
            for t, p in out.mean.items():
                chunks[t].append(p)
            for t in weighted:
                member_chunks[t].append(out.members[t].astype(np.float32))
    keys = pa.concat_tables(ids) if ids else KEYS_SCHEMA.empty_table()
    n = keys.num_rows

    def column(task: tasks.Task) -> np.ndarray:
        if task.name not in have:
            return np.full(n, np.nan)
        return np.concatenate(chunks[task.name]) if chunks[task.name] else np.zeros(0)

    named = {t.prediction: column(t) for t in tasks.catalogue()}
    score = quality_score(named, weights)
    member_named = {
        tasks.task(t).prediction: np.concatenate(c) if c else np.zeros((0, members))
        for t, c in member_chunks.items()
    }
    spread = quality_score_sd(named, member_named, weights) if member_named else np.full(n, np.nan)
    columns = {c: pa.array(v, pa.float64(), mask=np.isnan(v)) for c, v in named.items()}
    for task in tasks.catalogue():
        if task.score_0_100:
            values = named[task.prediction]
            columns[task.score_column] = _nullable(100.0 * percentile_within_day(values))
    columns |= _popularity_columns(model.config.popularity, named, n)
    table = pa.table(
        {
            **{c: keys.column(c) for c in KEYS_SCHEMA.names},
            **columns,
            "quality_score": pa.array(score, pa.float64()),
            "quality_percentile": pa.array(percentile_within_day(score), pa.float64()),
            "quality_score_sd": _nullable(spread),
            "model_version": pa.array(np.full(n, model_version), pa.int64()),
        }
    )
    return table.sort_by([("created_at", "ascending"), ("video_id", "ascending")])


def _nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def _popularity_columns(
    scale: PopularityScale | None, named: dict[str, np.ndarray], n: int
) -> dict[str, pa.Array]:
    """``pred_popularity_class`` and ``pred_popularity_p0..p4``: null without the head."""
    task = tasks.ordinal()
    if task is None:
        return {}
    prefix = task.prediction.removesuffix("_score")
    probs = np.full((n, CLASSES), np.nan)
    predicted = np.full(n, np.nan)
    if scale is not None and n:
        probs = scale.probabilities(named[task.prediction])
        predicted = scale.predicted_classes(named[task.prediction])
    out = {f"{prefix}_class": pa.array(predicted, pa.float64(), mask=np.isnan(predicted))}
    out[f"{prefix}_class"] = out[f"{prefix}_class"].cast(pa.int64())
    for k in range(CLASSES):
        out[f"{prefix}_p{k}"] = _nullable(probs[:, k])
    return out
