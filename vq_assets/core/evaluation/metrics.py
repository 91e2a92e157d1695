"""Evaluation metrics of the quality model (pure numpy/scipy).

Every metric ignores rows whose label is null (NaN) or whose prediction is not finite. A metric
that cannot be computed (no rows, a constant column for a correlation) is NaN rather than 0, so a
broken evaluation is never mistaken for a bad-but-valid one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from vq_assets.core.model import tasks
from vq_assets.core.model.popularity import CLASSES, PopularityScale


def _valid(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"shape mismatch: pred {pred.shape} vs true {true.shape}")
    keep = np.isfinite(pred) & np.isfinite(true)
    return pred[keep], true[keep]


def count(true: np.ndarray) -> int:
    """Number of non-null labels."""
    return int(np.isfinite(np.asarray(true, dtype=np.float64)).sum())


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean absolute error over non-null rows."""
    p, t = _valid(pred, true)
    return float(np.mean(np.abs(p - t))) if t.size else float("nan")


def log1p_r2(pred: np.ndarray, true: np.ndarray) -> float:
    """R² of ``log1p(pred)`` against ``log1p(true)`` (1 - SS_res / SS_tot); can be negative."""
    p, t = _valid(pred, true)
    if t.size < 2:
        return float("nan")
    lp, lt = np.log1p(p), np.log1p(t)
    ss_tot = float(np.sum((lt - lt.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((lt - lp) ** 2)) / ss_tot


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation over non-null rows (ties get average ranks)."""
    p, t = _valid(pred, true)
    if t.size < 2 or np.all(p == p[0]) or np.all(t == t[0]):
        return float("nan")
    return float(stats.spearmanr(p, t).statistic)


def _row_spearman(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Spearman per row of two ``[B, n]`` matrices (average ranks for ties)."""
    rp = stats.rankdata(pred, axis=1)
    rt = stats.rankdata(true, axis=1)
    rp -= rp.mean(axis=1, keepdims=True)
    rt -= rt.mean(axis=1, keepdims=True)
    denom = np.sqrt((rp**2).sum(axis=1) * (rt**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rp * rt).sum(axis=1) / denom, np.nan)


def spearman_gap(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    true: np.ndarray,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``spearman(a) - spearman(b)`` on the same rows, with a 95% paired-bootstrap interval.

    Both predictors are scored on the same resampled rows, so the interval reflects how often
    the ranking of the two would flip on another draw of test videos; an interval that contains
    0 means the test set cannot tell them apart. Rows where either prediction or the label is
    not finite are dropped first.

    Returns:
        ``(gap, ci_low, ci_high)``; NaN when either Spearman is undefined.
    """
    a = np.asarray(pred_a, dtype=np.float64)
    b = np.asarray(pred_b, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(t)
    a, b, t = a[keep], b[keep], t[keep]
    gap = spearman(a, t) - spearman(b, t)
    if not np.isfinite(gap):
        return float("nan"), float("nan"), float("nan")
    rows = np.random.default_rng(seed).integers(0, len(t), size=(resamples, len(t)))
    draws = _row_spearman(a[rows], t[rows]) - _row_spearman(b[rows], t[rows])
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return float(gap), float(low), float(high)


def skip_calibration(pred_rate: np.ndarray, skip_rate: np.ndarray, plays: np.ndarray) -> float:
    """Predicted expected events over actual ones for a rate per play, on rows with plays > 0
    (1.0 is perfect); for the skip rate, predicted skips over actual skips.

    ``sum(pred_rate * plays) / sum(skip_rate * plays)``: >1 means the model over-predicts.
    """
    plays = np.asarray(plays, dtype=np.float64)
    pred_rate = np.asarray(pred_rate, dtype=np.float64)
    skip_rate = np.asarray(skip_rate, dtype=np.float64)
    keep = (plays > 0) & np.isfinite(skip_rate) & np.isfinite(pred_rate)
    actual = float(np.sum(skip_rate[keep] * plays[keep]))
    if actual == 0.0:
        return float("nan")
    return float(np.sum(pred_rate[keep] * plays[keep])) / actual


def classification_metrics(pred: np.ndarray, true: np.ndarray, classes: int) -> dict[str, float]:
    """Ordered-class metrics over rows where both are finite: accuracy, within-one-class
    accuracy, macro-F1 (over the classes present in truth or prediction) and quadratic weighted
    kappa (Cohen's, weights (i - j)^2; 1 = perfect, 0 = chance)."""
    p, t = _valid(pred, true)
    if t.size == 0:
        return dict.fromkeys(("accuracy", "within_one_accuracy", "macro_F1", "QWK"), float("nan"))
    p, t = p.astype(int), t.astype(int)
    confusion = confusion_matrix(p, t, classes)
    f1s = []
    for k in range(classes):
        tp = confusion[k, k]
        fp, fn = confusion[:, k].sum() - tp, confusion[k, :].sum() - tp
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    i, j = np.indices((classes, classes))
    w = (i - j) ** 2 / (classes - 1) ** 2
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / confusion.sum()
    denom = float((w * expected).sum())
    return {
        "accuracy": float(np.mean(p == t)),
        "within_one_accuracy": float(np.mean(np.abs(p - t) <= 1)),
        "macro_F1": float(np.mean(f1s)),
        "QWK": 1.0 - float((w * confusion).sum()) / denom if denom else float("nan"),
    }


def confusion_matrix(pred: np.ndarray, true: np.ndarray, classes: int) -> np.ndarray:
    """``[classes, classes]`` counts, rows = true class, columns = predicted class."""
    out = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(out, (np.asarray(true, int), np.asarray(pred, int)), 1)
    return out


def task_metrics(
    preds: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    plays: np.ndarray,
    losses: Mapping[str, float],
    prefix: str = "val",
    popularity: PopularityScale | None = None,
) -> dict[str, float]:
    """The MLflow metric table of DESIGN.md §6, for every catalogue task that ``preds`` holds
    (a model left out tasks whose labels its source does not keep).

    Args:
        preds: ``{task: predictions in natural units}``.
        labels: ``{task: labels in natural units, NaN for null}``.
        plays: play count per row (the trials of a rate task's calibration).
        losses: ``{task: the model's loss on these rows}``; ``{prefix}_loss`` is their sum,
            the same total the model trains on.
        prefix: metric name prefix (``val`` for held-out days).
        popularity: the scale that cuts an ordinal task's scores into classes; without it an
            ordinal task gets its Spearman and loss only.

    Returns:
        per log1p task ``{prefix}_{stem}_{MAE,log1p_R2,SpearmanCorr,count,loss}`` (e.g.
        ``val_e_item_timespent_0to3_MAE``), per binomial or rate task
        ``{prefix}_{stem}_{calibration,SpearmanCorr,loss}``, per ordinal task
        ``{prefix}_{stem}_{accuracy,within_one_accuracy,macro_F1,QWK,SpearmanCorr,loss}``, and
        ``{prefix}_loss``.
    """
    out: dict[str, float] = {}
    present = [t for t in tasks.catalogue() if t.name in preds]
    for task in present:
        name = f"{prefix}_{task.stem}"
        pred, true = preds[task.name], labels[task.name]
        if task.kind == "log1p":
            out[f"{name}_MAE"] = mae(pred, true)
            out[f"{name}_log1p_R2"] = log1p_r2(pred, true)
            out[f"{name}_count"] = float(count(true))
        elif task.kind == "ordinal":
            if popularity is not None:
                classes = classification_metrics(
                    popularity.predicted_classes(pred), popularity.classes(true), CLASSES
                )
                out |= {f"{name}_{k}": v for k, v in classes.items()}
        else:
            out[f"{name}_calibration"] = skip_calibration(pred, true, plays)
        out[f"{name}_SpearmanCorr"] = spearman(pred, true)
        out[f"{name}_loss"] = float(losses[task.name])
    out[f"{prefix}_loss"] = float(sum(losses[t.name] for t in present))
    return out


def mean_spearman(
    metrics: Mapping[str, float], task_names: Sequence[str] | None = None, prefix: str = "val"
) -> float:
    """Mean of the SpearmanCorr values of ``task_metrics`` over ``task_names`` (default: every
    catalogue task the metrics hold); NaN if any is NaN."""
    names = task_names if task_names is not None else tasks.names()
    keys = [f"{prefix}_{t.stem}_SpearmanCorr" for t in tasks.catalogue() if t.name in names]
    if task_names is None:
        keys = [k for k in keys if k in metrics]
    values = [metrics[k] for k in keys]
    return float(np.mean(values)) if values else float("nan")
