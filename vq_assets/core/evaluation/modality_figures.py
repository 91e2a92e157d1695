"""Plots of the modality study: per task, each arm's test Spearman with the interval of its
difference to the full model; the late fusion's Spearman against its weight; the fine-tuned
text regressor's loss curves per step and per epoch."""

from __future__ import annotations

import numpy as np

from vq_assets.core.evaluation.modality import ModalityStudy, arm_table
from vq_assets.core.model.text_regressor import TextRegressorResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spearman_by_variant(rows: list[dict]):
    """One panel per task: a dot per arm at its test Spearman; the bar is the 95%
    paired-bootstrap interval of its difference to ``all``, placed around that Spearman."""
    plt = _pyplot()
    table = arm_table(rows)
    variants = list(table)
    names = [t for t in table.get("all", {})]
    fig, axes = plt.subplots(
        1,
        len(names),
        figsize=(3.2 * len(names), 0.4 * len(variants) + 1.5),
        squeeze=False,
        layout="constrained",
    )
    y = np.arange(len(variants))
    for ax, task in zip(axes[0], names, strict=True):
        cells = [table[v].get(task, (np.nan,) * 4) for v in variants]
        s = np.array([c[0] for c in cells])
        gap, low, high = (np.array([c[k] for c in cells]) for k in (1, 2, 3))
        err = np.nan_to_num(np.stack([gap - low, high - gap]))
        ax.errorbar(s, y, xerr=err, fmt="o", capsize=3)
        ax.axvline(table["all"][task][0], color="grey", lw=1, ls="--")
        ax.set(title=task, xlabel="test Spearman", yticks=y)
        ax.set_yticklabels(variants if ax is axes[0][0] else [])
    fig.suptitle("Modality study (bars: 95% interval of the difference to `all`)")
    return fig


def fusion_by_alpha(study: ModalityStudy):
    """Spearman of alpha * image + (1 - alpha) * text per task: validation (what chose alpha,
    marked) and test (reported only)."""
    plt = _pyplot()
    fusion = study.fusion
    names = list(fusion.best_alpha)
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False, layout="constrained"
    )
    for ax, task in zip(axes[0], names, strict=True):
        ax.plot(fusion.alphas, fusion.val_spearman[task], "o-", label="validation")
        ax.plot(fusion.alphas, fusion.test_spearman[task], "s--", label="test")
        ax.axvline(fusion.best_alpha[task], color="grey", lw=1)
        ax.set(title=task, xlabel="alpha (image weight)")
    axes[0][0].set_ylabel("Spearman")
    axes[0][0].legend()
    fig.suptitle("Late fusion: alpha chosen on validation days (vertical line)")
    return fig


def text_regressor_losses(result: TextRegressorResult):
    """Training loss per step, validation loss every few steps; both per epoch."""
    plt = _pyplot()
    fig, (steps, epochs) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    steps.plot(
        [s["step"] for s in result.steps],
        [s["train_loss"] for s in result.steps],
        lw=1,
        label="train (batch)",
    )
    steps.plot(
        [s["step"] for s in result.val_steps],
        [s["val_loss"] for s in result.val_steps],
        "o-",
        label="validation",
    )
    steps.set(xlabel="step", ylabel="loss (sum of task losses)", title="per step")
    steps.legend()
    e = [x["epoch"] for x in result.epochs]
    epochs.plot(e, [x["train_loss"] for x in result.epochs], "o-", label="train")
    epochs.plot(e, [x["val_loss"] for x in result.epochs], "s-", label="validation")
    epochs.set(xlabel="epoch", title="per epoch", xticks=e)
    epochs.legend()
    fig.suptitle("Fine-tuned text regressor (MiniLM)")
    return fig


def modality_figures(study: ModalityStudy) -> dict[str, object]:
    """``modality_spearman.png``, and where those arms ran ``late_fusion_alpha.png`` and
    ``text_regressor_loss.png``."""
    out = {"modality_spearman.png": spearman_by_variant(study.rows)}
    if study.fusion is not None:
        out["late_fusion_alpha.png"] = fusion_by_alpha(study)
    if study.text_regressor is not None:
        out["text_regressor_loss.png"] = text_regressor_losses(study.text_regressor)
    return out


def modality_series(study: ModalityStudy) -> dict[str, list[tuple[int, float]]]:
    """MLflow metric histories (name -> (step, value)): the text regressor's losses per step
    and per epoch."""
    result = study.text_regressor
    if result is None:
        return {}
    return {
        "text_regressor.train_loss": [(int(s["step"]), s["train_loss"]) for s in result.steps],
        "text_regressor.val_loss": [(int(s["step"]), s["val_loss"]) for s in result.val_steps],
        "text_regressor.epoch_train_loss": [
            (int(e["epoch"]), e["train_loss"]) for e in result.epochs
        ],
        "text_regressor.epoch_val_loss": [(int(e["epoch"]), e["val_loss"]) for e in result.epochs],
    }
