"""Scoring new videos: task predictions in natural units, the quality score, its percentile."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vq_assets.core.features import to_dataset
from vq_assets.core.flywheel import (
    PRED_COLUMNS,
    QualityWeights,
    percentile_within_day,
    quality_score,
)
from vq_assets.core.train import LoadedModel, predict


def score_videos(
    rows: pa.Table, model: LoadedModel, model_version: int, weights: QualityWeights
) -> pa.Table:
    """One row per video of `rows` (from `features.joined_rows(with_labels=False)`)."""
    data = to_dataset(rows)
    preds = (
        predict(model.model, model.normalizer, data)
        if rows.num_rows
        else {t: np.zeros(0) for t in PRED_COLUMNS}
    )
    named = {PRED_COLUMNS[t]: v for t, v in preds.items()}
    score = quality_score(named, weights)
    return pa.table(
        {
            "video_id": rows.column("video_id"),
            "creator_id": rows.column("creator_id"),
            "created_at": rows.column("created_at"),
            **{c: pa.array(named[c], pa.float64()) for c in PRED_COLUMNS.values()},
            "quality_score": pa.array(score, pa.float64()),
            "quality_percentile": pa.array(percentile_within_day(score), pa.float64()),
            "model_version": pa.array(np.full(rows.num_rows, model_version), pa.int64()),
        }
    )
