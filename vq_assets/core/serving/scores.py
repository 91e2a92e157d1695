"""Scoring new videos: task predictions in natural units, the quality score, its percentile."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from vq_assets.core.model import tasks
from vq_assets.core.model.features import to_dataset
from vq_assets.core.model.inference import LoadedModel, predict
from vq_assets.core.serving.flywheel import percentile_within_day, quality_score


def score_videos(
    rows: pa.Table,
    model: LoadedModel,
    model_version: int,
    weights: Mapping[str, float] | None = None,
) -> pa.Table:
    """One row per video of `rows` (from `features.joined_rows(with_labels=False)`): every
    catalogue task's prediction column, the quality score and its percentile within the day."""
    data = to_dataset(rows)
    preds = (
        predict(model.model, model.normalizer, data)
        if rows.num_rows
        else {t: np.zeros(0) for t in tasks.names()}
    )
    named = {t.prediction: preds[t.name] for t in tasks.catalogue()}
    score = quality_score(named, weights)
    return pa.table(
        {
            "video_id": rows.column("video_id"),
            "creator_id": rows.column("creator_id"),
            "created_at": rows.column("created_at"),
            **{c: pa.array(v, pa.float64()) for c, v in named.items()},
            "quality_score": pa.array(score, pa.float64()),
            "quality_percentile": pa.array(percentile_within_day(score), pa.float64()),
            "model_version": pa.array(np.full(rows.num_rows, model_version), pa.int64()),
        }
    )
