"""Tidy evaluation rows ``(section, variant, slice, metric, value)`` and the per-task Spearman
numbers most sections are made of (shared by ``tables`` and ``modality``)."""

from __future__ import annotations

import numpy as np

from vq_assets.core.evaluation.metrics import spearman, spearman_gap
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset


def metric_rows(section: str, variant: str, metrics: dict[str, float], slice_: str = "all"):
    return [
        {"section": section, "variant": variant, "slice": slice_, "metric": k, "value": v}
        for k, v in metrics.items()
    ]


def spearman_by_task(preds: dict[str, np.ndarray], data: QualityDataset) -> dict[str, float]:
    """``{stem}_SpearmanCorr`` for every catalogue task that ``preds`` holds."""
    return {
        f"{t.stem}_SpearmanCorr": spearman(preds[t.name], data.targets[t.name])
        for t in tasks.catalogue()
        if t.name in preds and t.name in data.targets
    }


def spearman_gaps(
    model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], test: QualityDataset, seed: int
) -> dict[str, float]:
    """Model minus baseline test Spearman per task both have, with its 95% paired-bootstrap
    interval."""
    out = {}
    for task in tasks.catalogue():
        t = task.name
        if t not in model or t not in baseline:
            continue
        gap, low, high = spearman_gap(model[t], baseline[t], test.targets[t], seed=seed)
        stem = f"val_{task.stem}_SpearmanGap"
        out |= {stem: gap, f"{stem}_ci95_low": low, f"{stem}_ci95_high": high}
    return out
