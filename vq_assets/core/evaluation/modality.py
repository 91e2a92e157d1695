"""The modality study of DESIGN §6: which inputs carry the signal.

Per task, the test-day Spearman of models that see one modality (``features.MODALITIES``), of
the fine-tuned text regressor (``model.text_regressor``) and of a late fusion of the image-only
and text-only models, each with the 95% paired-bootstrap interval of its difference to the full
(production) model. The fusion weight is chosen on validation days only: test rows are scored,
never used to choose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vq_assets.core.evaluation.metrics import spearman
from vq_assets.core.evaluation.rows import metric_rows, spearman_by_task, spearman_gaps
from vq_assets.core.evaluation.variants import train_variant
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import MODALITIES, groups_for
from vq_assets.core.model.inference import evaluate
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.text_regressor import (
    TextRegressorResult,
    TextRegressorSettings,
    fit_text_regressor,
)

log = logging.getLogger(__name__)

SECTION = "modality"
SWEEP_SECTION = "late_fusion_sweep"
ALPHAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())
# The two separately trained models late fusion combines: alpha * image + (1 - alpha) * text.
FUSED = ("image_only", "text_only")
TEXT_REGRESSOR = "text_regressor"
LATE_FUSION = "late_fusion"

Predictions = dict[str, np.ndarray]


def fuse(image: np.ndarray, text: np.ndarray, task: str, alpha: float) -> np.ndarray:
    """``alpha * image + (1 - alpha) * text`` on the task's ranking scale (log1p for counts,
    as the heads learn them), where both models' predictions are comparable."""
    ranked = tasks.task(task).behaviour.ranked
    return alpha * ranked(image) + (1.0 - alpha) * ranked(text)


@dataclass(frozen=True)
class Fusion:
    """Per task: the validation Spearman at every alpha, the chosen alpha (the best of those,
    the smallest on a tie) and the test Spearman at every alpha (reported, never chosen on)."""

    alphas: tuple[float, ...]
    val_spearman: dict[str, np.ndarray]
    test_spearman: dict[str, np.ndarray]
    best_alpha: dict[str, float]
    test_predictions: Predictions


def late_fusion(
    val: tuple[Predictions, Predictions],
    test: tuple[Predictions, Predictions],
    val_labels: dict[str, np.ndarray],
    test_labels: dict[str, np.ndarray],
    alphas: Sequence[float] = ALPHAS,
) -> Fusion:
    """Sweep alpha on the validation rows (`val` = image and text predictions there) and fuse
    the test predictions at each task's best alpha. `test_labels` only score the sweep."""
    (image_val, text_val), (image_test, text_test) = val, test
    curves, test_curves, best, fused = {}, {}, {}, {}
    for task in (t for t in image_val if t in text_val):
        curve = np.array(
            [
                spearman(fuse(image_val[task], text_val[task], task, a), val_labels[task])
                for a in alphas
            ]
        )
        curves[task] = curve
        test_curves[task] = np.array(
            [
                spearman(fuse(image_test[task], text_test[task], task, a), test_labels[task])
                for a in alphas
            ]
        )
        # All-NaN (no validation labels): fall back to an even mix rather than to a test look.
        alpha = alphas[int(np.nanargmax(curve))] if np.isfinite(curve).any() else 0.5
        best[task] = float(alpha)
        fused[task] = fuse(image_test[task], text_test[task], task, alpha)
    return Fusion(tuple(alphas), curves, test_curves, best, fused)


@dataclass
class ModalityStudy:
    """The study's tidy rows (sections ``modality`` and ``late_fusion_sweep``), the fusion
    sweep and the fine-tuning curves for the figures, and the arms it could not measure with
    the reason."""

    rows: list[dict]
    fusion: Fusion | None
    text_regressor: TextRegressorResult | None
    not_measured: dict[str, str] = field(default_factory=dict)


def _arm_rows(
    variant: str, preds: Predictions, full: Predictions, test: QualityDataset, seed: int
) -> list[dict]:
    return metric_rows(
        SECTION, variant, spearman_by_task(preds, test) | spearman_gaps(preds, full, test, seed)
    )


def _not_measured(variant: str) -> str:
    if variant == "cover_only":
        return (
            "no cover vector (cover_emb) that varies over the training rows: no video has a "
            "cover, the embeddings were written before video_embeddings kept the cover apart, "
            "or the encoder has no image tower"
        )
    return f"none of the groups {MODALITIES[variant]} varies over the training rows"


def modality_study(
    data: QualityDataset,
    split: np.ndarray,
    captions: Sequence[str | None],
    full: Predictions,
    known: dict[tuple[str, ...], Predictions],
    shape: ModelShape,
    settings: TrainSettings,
    text_regressor: TextRegressorSettings | None,
) -> ModalityStudy:
    """The study on the test rows of `data` (targets on the full model's popularity scale).

    Args:
        data, split: the training set as ``to_dataset`` gives it, with its split per row.
        captions: per row of `data`, the caption the text regressor reads.
        full: the production model's test predictions (the ``all`` arm, gap 0).
        known: test predictions of arms already trained on this training set, by their groups
            (the ablation's), reused instead of training the same recipe twice.
        text_regressor: its settings, or None to leave the arm out (it costs CPU minutes).
    """
    test_mask, val_mask = split == "test", split == "validation"
    test, val = data.subset(test_mask), data.subset(val_mask)
    rows: list[dict] = []
    preds: dict[str, Predictions] = {}
    val_preds: dict[str, Predictions] = {}
    not_measured: dict[str, str] = {}
    for variant in MODALITIES:
        groups = groups_for(variant, data, split == "train")
        if variant == "all":
            preds[variant] = full
        elif not groups:
            not_measured[variant] = _not_measured(variant)
            log.warning("modality %s not measured: %s", variant, not_measured[variant])
            continue
        elif groups in known and variant not in FUSED:
            preds[variant] = known[groups]
        else:
            log.info("modality: training %s on %s", variant, groups)
            started = time.monotonic()
            result = train_variant(data, split, variant, shape, settings)
            preds[variant] = evaluate(result.model, result.normalizer, test).predictions
            val_preds[variant] = evaluate(result.model, result.normalizer, val).predictions
            rows += metric_rows(SECTION, variant, {"train_seconds": time.monotonic() - started})
        rows += _arm_rows(variant, preds[variant], full, test, settings.seed)

    fusion = None
    if all(v in val_preds for v in FUSED):
        fusion = late_fusion(
            tuple(val_preds[v] for v in FUSED),
            tuple(preds[v] for v in FUSED),
            val.targets,
            test.targets,
        )
        rows += _arm_rows(LATE_FUSION, fusion.test_predictions, full, test, settings.seed)
        rows += metric_rows(
            SECTION,
            LATE_FUSION,
            {
                f"{tasks.task(t).stem}_{k}": v
                for t, alpha in fusion.best_alpha.items()
                for k, v in (
                    ("alpha", alpha),
                    ("val_SpearmanCorr", float(np.nanmax(fusion.val_spearman[t]))),
                )
            },
        )
        for i, alpha in enumerate(fusion.alphas):
            curve = {}
            for t in fusion.best_alpha:
                stem = tasks.task(t).stem
                curve[f"{stem}_val_SpearmanCorr"] = float(fusion.val_spearman[t][i])
                curve[f"{stem}_test_SpearmanCorr"] = float(fusion.test_spearman[t][i])
            rows += metric_rows(SWEEP_SECTION, f"alpha={alpha:.2f}", curve)
    else:
        not_measured[LATE_FUSION] = "needs both the image-only and the text-only model"

    fine_tuned = None
    if text_regressor is not None:
        log.info("modality: fine-tuning the text regressor (%s)", text_regressor)
        fine_tuned = fit_text_regressor(
            captions, data, split, list(full), text_regressor, test_mask
        )
        rows += _arm_rows(TEXT_REGRESSOR, fine_tuned.predictions, full, test, settings.seed)
        rows += metric_rows(
            SECTION,
            TEXT_REGRESSOR,
            {
                "train_seconds": fine_tuned.seconds,
                "train_rows": float(fine_tuned.train_rows),
                **{f"epoch{e['epoch']}_train_loss": e["train_loss"] for e in fine_tuned.epochs},
                **{f"epoch{e['epoch']}_val_loss": e["val_loss"] for e in fine_tuned.epochs},
            },
        )
    else:
        not_measured[TEXT_REGRESSOR] = "turned off in the evaluation config (fine_tune_text)"

    return ModalityStudy(rows, fusion, fine_tuned, not_measured)


def arm_table(rows: list[dict]) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """From the ``modality`` rows: variant -> task -> (test Spearman, difference to ``all``,
    its 95% interval low, high), in the order the arms were measured."""
    value = {(r["variant"], r["metric"]): r["value"] for r in rows if r["section"] == SECTION}
    variants = dict.fromkeys(r["variant"] for r in rows if r["section"] == SECTION)
    out: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    for variant in variants:
        out[variant] = {}
        for task in tasks.catalogue():
            spearman_ = value.get((variant, f"{task.stem}_SpearmanCorr"))
            if spearman_ is None:
                continue
            gap = f"val_{task.stem}_SpearmanGap"
            out[variant][task.name] = (
                spearman_,
                *(
                    value.get((variant, gap + end), np.nan)
                    for end in ("", "_ci95_low", "_ci95_high")
                ),
            )
    return out


def modality_markdown(rows: list[dict], not_measured: dict[str, str]) -> str:
    """Per variant and task: test Spearman, and its difference to ``all`` with the 95%
    interval; the late fusion's alpha per task; the arms not measured, with the reason."""
    table = arm_table(rows)
    names = [t.name for t in tasks.catalogue() if t.name in table.get("all", {})]
    lines = [
        "Test Spearman (difference to `all`, 95% paired-bootstrap interval)",
        "",
        "| variant | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for variant, by_task in table.items():
        cells = [
            "{:.3f} ({:+.3f} [{:+.3f}, {:+.3f}])".format(*by_task[t]) if t in by_task else "-"
            for t in names
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    name_of = {f"{t.stem}_alpha": t.name for t in tasks.catalogue()}
    alphas = {
        name_of[r["metric"]]: r["value"]
        for r in rows
        if r["section"] == SECTION and r["variant"] == LATE_FUSION and r["metric"] in name_of
    }
    if alphas:
        chosen = ", ".join(f"{name}: {a:.1f}" for name, a in alphas.items())
        lines += ["", f"Late fusion's image weight alpha, chosen on validation days: {chosen}"]
    lines += [""] + [f"- {v}: not measured; {why}" for v, why in not_measured.items()]
    return "\n".join(lines)
