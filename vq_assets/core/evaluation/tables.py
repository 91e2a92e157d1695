"""The evaluation of DESIGN §6 as tidy rows ``(section, variant, slice, metric, value)``: the
model, its feature ablation, the baselines and the model's Spearman gap to each, the value of
the retrieval-augmented prior (the model's gap to its ablation arm without it), the modality
study (``modality``), slices by language and duration, the best achievable (simulated lakes)
and the demo lists."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from vq_assets.core.evaluation.baselines import creator_mean_baseline, gbdt_baseline
from vq_assets.core.evaluation.figures import figures
from vq_assets.core.evaluation.metrics import task_metrics
from vq_assets.core.evaluation.modality import modality_study
from vq_assets.core.evaluation.modality_figures import modality_figures, modality_series
from vq_assets.core.evaluation.rows import metric_rows, spearman_by_task, spearman_gaps
from vq_assets.core.evaluation.variants import split_of, test_metrics, train_variant
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import (
    ABLATIONS,
    DURATION_EDGES_S,
    FULL_MODEL,
    WITHOUT_RETRIEVAL,
    groups_for,
    to_dataset,
)
from vq_assets.core.model.inference import LoadedModel
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.text_regressor import TextRegressorSettings

log = logging.getLogger(__name__)


def slice_rows(
    preds: dict[str, np.ndarray], test: QualityDataset, languages: list[str | None]
) -> list[dict]:
    """Spearman per task and row count for each language and each duration bucket."""
    rows = []
    edges = [0.0, *DURATION_EDGES_S, float("inf")]
    buckets = test.features["duration_bucket"]
    slices: dict[str, np.ndarray] = {}
    for lang in sorted({lang or "unknown" for lang in languages}):
        slices[f"language={lang}"] = np.array([(x or "unknown") == lang for x in languages])
    for b in sorted(set(buckets.tolist())):
        slices[f"duration=[{edges[b]:g},{edges[b + 1]:g})s"] = buckets == b
    for name, mask in slices.items():
        sub = test.subset(mask)
        metrics = spearman_by_task({t: p[mask] for t, p in preds.items()}, sub)
        metrics["count"] = float(mask.sum())
        rows += metric_rows("slice", FULL_MODEL, metrics, name)
    return rows


def best_achievable(
    expected: dict[str, np.ndarray],
    video_ids: list[str],
    truth_ids: list[str],
    test: QualityDataset,
) -> dict[str, float]:
    """Spearman of the simulator's expected labels (``{label column: [n_truth]}``, rows in
    ``truth_ids`` order) against the realised ones of the test videos: what a predictor that
    knew each video's hidden appeal (and everything known at creation) would reach. The luck of
    distribution (the exposure draw) stays unknown to it, as to any real predictor. Tasks whose
    label has no expected value are left out."""
    index = {v: i for i, v in enumerate(truth_ids)}
    rows = np.array([index.get(v, -1) for v in video_ids])
    if (rows < 0).any():
        raise ValueError(f"{int((rows < 0).sum())} test videos have no truth row")
    oracle = {t.name: expected[t.label][rows] for t in tasks.catalogue() if t.label in expected}
    return spearman_by_task(oracle, test)


def demo_lists(table: pa.Table, pred_skip_rate: np.ndarray, n: int = 10) -> pa.Table:
    """The n test videos predicted most and least skippable, with captions and true labels."""
    order = np.argsort(pred_skip_rate, kind="stable")
    picks = [("most_skippable", i) for i in order[::-1][:n]]
    picks += [("least_skippable", i) for i in order[:n]]
    labels = dict.fromkeys(["plays", *(t.label for t in tasks.catalogue() if t.kind != "ordinal")])
    cols = ["video_id", "caption", "language", "duration_s", *labels]
    rows = []
    for rank, (which, i) in enumerate(picks):
        row = {c: table.column(c)[int(i)].as_py() for c in cols}
        rows.append(
            {"list": which, "rank": rank % n + 1, "pred_skip_rate": float(pred_skip_rate[i]), **row}
        )
    return pa.Table.from_pylist(rows)


@dataclass
class Report:
    """Everything model_evaluation publishes: tidy metric rows, the demo lists, the figures,
    metric histories for MLflow (name -> (step, value)) and the study arms not measured."""

    rows: list[dict]
    demo: pa.Table
    figures: dict[str, object]
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)

    def table(self, model_version: int) -> pa.Table:
        return pa.Table.from_pylist([{**r, "model_version": model_version} for r in self.rows])


@dataclass(frozen=True)
class Truth:
    """The simulator's expected labels of some videos (never a feature)."""

    video_ids: list[str]
    expected: dict[str, np.ndarray]


def test_days(table: pa.Table) -> list[str]:
    """The test days of a training set, as ISO dates."""
    days = table.column("day").to_pylist()
    return sorted(
        {d.isoformat() for d, s in zip(days, split_of(table), strict=True) if s == "test"}
    )


def evaluate_all(
    table: pa.Table,
    full: LoadedModel,
    shape: ModelShape,
    settings: TrainSettings,
    truth: Truth | None,
    text_regressor: TextRegressorSettings | None = None,
) -> Report:
    """The §6 evaluation of `full` (the registered model) on the test days of `table`; the
    modality study fine-tunes the text regressor only when given its settings."""
    scale = full.config.popularity
    data, split = to_dataset(table).with_popularity(scale), split_of(table)
    test_mask = split == "test"
    test = data.subset(test_mask)
    rows: list[dict] = []

    metrics, preds = test_metrics(full, test)
    rows += metric_rows("model", FULL_MODEL, metrics)
    known = {}  # test predictions by feature groups: the modality study reuses these arms
    for ablation in ABLATIONS:
        if ablation == FULL_MODEL:
            rows += metric_rows("ablation", ablation, metrics)
            continue
        log.info("ablation: training %s", ablation)
        result = train_variant(data, split, ablation, shape, settings)
        variant, variant_preds = test_metrics(result, test)
        known[groups_for(ablation, data, split == "train")] = variant_preds
        rows += metric_rows("ablation", ablation, variant)
        # The prior's value: the model against the same recipe without it, on the same rows.
        # A model trained before the prior existed (or on data without it) has nothing to gain.
        if ablation == WITHOUT_RETRIEVAL and "retrieval" in full.config.groups:
            gains = spearman_gaps(preds, variant_preds, test, settings.seed)
            rows += metric_rows("retrieval_prior", ablation, gains)

    nan_losses = dict.fromkeys(tasks.names(), float("nan"))
    baselines = {
        "creator_prior_mean": creator_mean_baseline(
            table, split == "train", full.config.tasks, scale
        ),
        "lightgbm": gbdt_baseline(data, split, seed=settings.seed),
    }
    for name, all_preds in baselines.items():
        p = {t: v[test_mask] for t, v in all_preds.items() if t in full.config.tasks}
        baseline = task_metrics(p, test.targets, test.plays, nan_losses, popularity=scale)
        rows += metric_rows("baseline", name, baseline)
        rows += metric_rows("model_vs_baseline", name, spearman_gaps(preds, p, test, settings.seed))

    study = modality_study(
        data,
        split,
        table.column("caption").to_pylist(),
        preds,
        known,
        shape,
        settings,
        text_regressor,
    )
    rows += study.rows

    test_table = table.filter(pa.array(test_mask))
    rows += slice_rows(preds, test, test_table.column("language").to_pylist())
    if truth is not None:
        ids = test_table.column("video_id").to_pylist()
        best = best_achievable(truth.expected, ids, truth.video_ids, test)
        rows += metric_rows("best_achievable", "simulator_truth", best)
    # The lists rank by predicted skip rate; a model without that head (no skip counter) has none.
    demo = demo_lists(test_table, preds["skip_rate"]) if "skip_rate" in preds else pa.table({})
    return Report(
        rows,
        demo,
        figures(preds, test, scale) | modality_figures(study),
        modality_series(study),
        study.not_measured,
    )


def headline_metrics(rows: list[dict]) -> dict[str, float]:
    """The numbers a user follows week over week, flat (Dagster charts float metadata across
    partitions): per task the model's test Spearman, its gap to LightGBM with the 95% interval,
    the retrieval prior's gain with its 95% interval (when the model has the prior), MAE
    (counts), calibration (rates) or accuracy and QWK (classes), and its share of the best
    achievable (simulated lakes). Tasks the model left out are absent."""
    value = {
        (r["section"], r["variant"], r["metric"]): r["value"] for r in rows if r["slice"] == "all"
    }
    out: dict[str, float] = {}
    for task in tasks.catalogue():
        stem, name = task.stem, task.name
        key = ("model", FULL_MODEL, f"val_{stem}_SpearmanCorr")
        if key not in value:
            continue
        spearman_ = value[key]
        out[f"{name}.test_spearman"] = spearman_
        gap = f"val_{stem}_SpearmanGap"
        for end, key in (
            ("", "gap_to_lightgbm"),
            ("_ci95_low", "gap_ci95_low"),
            ("_ci95_high", "gap_ci95_high"),
        ):
            out[f"{name}.{key}"] = value.get(
                ("model_vs_baseline", "lightgbm", gap + end), float("nan")
            )
            gain = value.get(("retrieval_prior", WITHOUT_RETRIEVAL, gap + end))
            if gain is not None:
                out[f"{name}.retrieval_gain{end}"] = gain
        qualities = [task.behaviour.quality_metric] + (["QWK"] if task.kind == "ordinal" else [])
        for quality in qualities:
            out[f"{name}.{quality.lower()}"] = value.get(
                ("model", FULL_MODEL, f"val_{stem}_{quality}"), float("nan")
            )
            if task.kind == "ordinal":  # the classifier a user would otherwise pick
                out[f"{name}.{quality.lower()}_creator_prior_class"] = value.get(
                    ("baseline", "creator_prior_mean", f"val_{stem}_{quality}"), float("nan")
                )
        best = value.get(("best_achievable", "simulator_truth", f"{stem}_SpearmanCorr"))
        if best:
            out[f"{name}.share_of_best"] = spearman_ / best
    return {k: float(v) for k, v in out.items()}
