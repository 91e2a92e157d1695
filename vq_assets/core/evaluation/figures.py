"""Evaluation plots: calibration of each rate task by predicted decile, predicted vs actual
for each count task, and the popularity classes' confusion matrix."""

from __future__ import annotations

import io

import numpy as np

from vq_assets.core.evaluation.metrics import confusion_matrix
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.popularity import CLASSES, PopularityScale


def _calibration(ax, p: np.ndarray, y: np.ndarray, w: np.ndarray, name: str) -> None:
    ok = np.isfinite(y) & (w > 0)
    edges = np.quantile(p[ok], np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p[ok], side="right") - 1, 0, 9)
    used = [b for b in range(10) if (bins == b).any()]
    xs = [np.average(p[ok][bins == b], weights=w[ok][bins == b]) for b in used]
    ys = [np.average(y[ok][bins == b], weights=w[ok][bins == b]) for b in used]
    ax.plot([0, 1], [0, 1], color="grey", lw=1)
    ax.plot(xs, ys, "o-")
    ax.set(
        xlabel=f"predicted {name}",
        ylabel=f"realised {name} (play-weighted)",
        title=f"{name} calibration by decile",
    )


def _confusion(ax, confusion: np.ndarray, name: str) -> None:
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(confusion):
        ax.text(j, i, f"{n}", ha="center", va="center", fontsize=8)
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"{name} classes (colour: share of the true class)",
        xticks=range(len(confusion)),
        yticks=range(len(confusion)),
    )


def figures(
    preds: dict[str, np.ndarray], test: QualityDataset, popularity: PopularityScale | None = None
) -> dict[str, object]:
    """``calibration_<task>.png`` per rate task, ``predicted_vs_actual.png`` for the counts,
    ``confusion_<task>.png`` for the popularity classes; for the tasks ``preds`` holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    present = [t for t in tasks.catalogue() if t.name in preds]
    for task in present:
        if task.behaviour.per_play:
            fig, ax = plt.subplots(figsize=(4.5, 4.5))
            _calibration(ax, preds[task.name], test.targets[task.name], test.plays, task.name)
            out[f"calibration_{task.name}.png"] = fig
        elif task.kind == "ordinal" and popularity is not None:
            predicted = popularity.predicted_classes(preds[task.name])
            true = popularity.classes(test.targets[task.name])
            ok = np.isfinite(predicted) & np.isfinite(true)
            fig, ax = plt.subplots(figsize=(5, 4.5))
            _confusion(ax, confusion_matrix(predicted[ok], true[ok], CLASSES), task.name)
            out[f"confusion_{task.name}.png"] = fig
    counts = [t.name for t in present if t.is_count]
    fig, axes = plt.subplots(1, len(counts), figsize=(4 * len(counts), 4), squeeze=False)
    for ax, name in zip(axes[0], counts, strict=True):
        ax.scatter(np.log1p(test.targets[name]), np.log1p(preds[name]), s=3, alpha=0.3)
        ax.set(xlabel=f"log1p actual {name}", ylabel="log1p predicted", title=name)
    out["predicted_vs_actual.png"] = fig
    return out


def png(fig) -> bytes:
    """A figure as PNG bytes (for the lake and the Dagster UI), closed afterwards."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def save_figures(lake: Lake, directory: str, figures: dict[str, object]) -> dict[str, bytes]:
    """Each figure as a PNG file under `directory` of the lake; the PNG bytes by name."""
    images = {name: png(fig) for name, fig in figures.items()}
    for name, data in images.items():
        lake.write_bytes(f"{directory}/{name}", data)
    return images
