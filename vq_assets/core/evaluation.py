"""Training variants, baselines and the evaluation tables of DESIGN §6 (no Dagster here).

Everything is measured on the same held-out test days: the model, its feature ablation, the two
baselines a user would otherwise pick (the creator's prior mean; gradient-boosted trees on the
same features), slices by language and duration, and, on simulated data, the best achievable
Spearman from the simulator's hidden truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from vq_assets.core.features import (
    ABLATIONS,
    CATEGORICAL,
    DURATION_EDGES_S,
    FULL_MODEL,
    TASKS,
    groups_for,
    to_dataset,
)
from vq_assets.core.metrics import (
    COUNT_TASK_STEMS,
    SKIP_RATE_STEM,
    mean_spearman,
    spearman,
    spearman_gap,
    task_metrics,
)
from vq_assets.core.model import ModelConfig
from vq_assets.core.train import (
    FitResult,
    LoadedModel,
    QualityDataset,
    TrainConfig,
    evaluate,
    fit_ensemble,
    recalibrate_heads,
)

log = logging.getLogger(__name__)

TASK_STEMS = {**COUNT_TASK_STEMS, "skip_rate": SKIP_RATE_STEM}
NAN_LOSSES = dict.fromkeys(TASKS, float("nan"))


@dataclass(frozen=True)
class ModelShape:
    """Widths and depths of the network (DESIGN §6), from config: the ``core.model.ModelConfig``
    fields that do not depend on the data, under the same names."""

    width: int = 128
    cross_layers: int = 2
    cross_rank: int = 16
    mlp: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    group_dropout: float = 0.25
    members: int = 5
    watch_time_prior_plays: float = 20.0


def model_config(
    dataset: QualityDataset,
    groups: tuple[str, ...],
    shape: ModelShape,
    cardinalities: dict[str, int] = CATEGORICAL,
) -> ModelConfig:
    """The network for `groups` of `dataset`: 2-D groups are dense, the others categorical."""
    dense = {g: dataset.features[g].shape[1] for g in groups if dataset.features[g].ndim == 2}
    cats = {g: cardinalities[g] for g in groups if dataset.features[g].ndim == 1}
    # Every ModelShape field is a ModelConfig field of the same name.
    return ModelConfig(dense_dims=dense, cat_cardinalities=cats, tasks=TASKS, **asdict(shape))


def train_variant(
    data: QualityDataset,
    split: np.ndarray,
    ablation: str,
    shape: ModelShape,
    cfg: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    groups = groups_for(ablation, data)
    keep = {g: data.features[g] for g in groups}
    subset = QualityDataset(keep, data.targets, data.plays)
    val = subset.subset(split == "validation")
    result = fit_ensemble(
        model_config(subset, groups, shape),
        cfg,
        subset.subset(split == "train"),
        val,
        on_epoch=on_epoch,
    )
    recalibrate_heads(result.model, result.normalizer, val)
    return result


def test_metrics(
    result: FitResult | LoadedModel, test: QualityDataset
) -> tuple[dict[str, float], dict]:
    """The §6 metric table on the test rows, and the predictions behind it."""
    ev = evaluate(result.model, result.normalizer, test)
    return task_metrics(ev.predictions, test.targets, test.plays, ev.losses), ev.predictions


def mean_test_spearman(model: LoadedModel, test: QualityDataset) -> float:
    """The promotion gate's score: mean Spearman over the four tasks on `test`."""
    ev = evaluate(model.model, model.normalizer, test)
    return mean_spearman(task_metrics(ev.predictions, test.targets, test.plays, ev.losses))


def creator_mean_baseline(table: pa.Table, train_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Predict each label by the creator's prior mean; no history -> the train-days mean."""
    out = {}
    for task in TASKS:
        prior = table.column(f"prior_mean_{task}").to_numpy(zero_copy_only=False).astype(float)
        truth = table.column(task).to_numpy(zero_copy_only=False).astype(float)
        fallback = float(np.nanmean(truth[train_rows])) if train_rows.any() else 0.0
        out[task] = np.where(np.isnan(prior), fallback, prior)
    return out


def _flat(data: QualityDataset, groups: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    cols, cats, at = [], [], 0
    for g in groups:
        x = data.features[g]
        if x.ndim == 1:
            cats.append(at)
            x = x[:, None]
        cols.append(x.astype(np.float32))
        at += x.shape[1]
    return np.concatenate(cols, axis=1), cats


def gbdt_baseline(
    data: QualityDataset,
    split: np.ndarray,
    seed: int = 0,
    rounds: int = 400,
    groups: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """LightGBM per task on the model's features (default: the full model's groups); early
    stopping on the validation rows."""
    x, cats = _flat(data, groups or groups_for(FULL_MODEL, data))
    tr, va = split == "train", split == "validation"
    preds = {}
    for task in TASKS:
        y = data.targets[task]
        params = {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_data_in_leaf": 20,
            "max_bin": 63,
            "feature_fraction": 0.8,
            "seed": seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        weight = None
        if task == "skip_rate":
            params["objective"] = "cross_entropy"
            target = y
            weight = data.plays
        else:
            params["objective"] = "regression"
            target = np.log1p(y)
        ok = np.isfinite(target)
        train_set = lgb.Dataset(
            x[tr & ok],
            target[tr & ok],
            weight=None if weight is None else weight[tr & ok],
            categorical_feature=cats,
        )
        val_set = lgb.Dataset(
            x[va & ok],
            target[va & ok],
            weight=None if weight is None else weight[va & ok],
            reference=train_set,
        )
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=rounds,
            valid_sets=[val_set],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        raw = booster.predict(x, num_iteration=booster.best_iteration)
        preds[task] = raw if task == "skip_rate" else np.expm1(raw)
    return preds


def metric_rows(section: str, variant: str, metrics: dict[str, float], slice_: str = "all"):
    return [
        {"section": section, "variant": variant, "slice": slice_, "metric": k, "value": v}
        for k, v in metrics.items()
    ]


def spearman_by_task(preds: dict[str, np.ndarray], data: QualityDataset) -> dict[str, float]:
    return {f"{TASK_STEMS[t]}_SpearmanCorr": spearman(preds[t], data.targets[t]) for t in TASKS}


def spearman_gaps(
    model: dict[str, np.ndarray], baseline: dict[str, np.ndarray], test: QualityDataset, seed: int
) -> dict[str, float]:
    """Model minus baseline test Spearman per task, with its 95% paired-bootstrap interval."""
    out = {}
    for task in TASKS:
        gap, low, high = spearman_gap(model[task], baseline[task], test.targets[task], seed=seed)
        stem = f"val_{TASK_STEMS[task]}_SpearmanGap"
        out |= {stem: gap, f"{stem}_ci95_low": low, f"{stem}_ci95_high": high}
    return out


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


def best_achievable(truth: pa.Table, video_ids: list[str], test: QualityDataset) -> dict:
    """Spearman of the simulator's expected labels against the realised ones: what a predictor
    that knew each video's hidden appeal (and everything known at creation) would reach. The
    luck of distribution (the exposure draw) stays unknown to it, as to any real predictor."""
    index = {v: i for i, v in enumerate(truth.column("video_id").to_pylist())}
    rows = np.array([index.get(v, -1) for v in video_ids])
    if (rows < 0).any():
        raise ValueError(f"{int((rows < 0).sum())} test videos have no truth row")

    def col(name: str) -> np.ndarray:
        return truth.column(name).to_numpy(zero_copy_only=False).astype(float)[rows]

    plays_7d = col("expected_plays_7d_at_creation")
    oracle = {
        "skips": plays_7d * col("expected_skip_rate"),
        "avg_watch_time_s": col("expected_avg_watch_time_s"),
        "full_watches": plays_7d * col("expected_full_watch_rate"),
        "skip_rate": col("expected_skip_rate"),
    }
    return spearman_by_task(oracle, test)


def demo_lists(table: pa.Table, pred_skip_rate: np.ndarray, n: int = 10) -> pa.Table:
    """The n test videos predicted most and least skippable, with captions and true labels."""
    order = np.argsort(pred_skip_rate, kind="stable")
    picks = [("most_skippable", i) for i in order[::-1][:n]]
    picks += [("least_skippable", i) for i in order[:n]]
    cols = ["video_id", "caption", "language", "duration_s", "plays", *TASKS]
    rows = []
    for rank, (which, i) in enumerate(picks):
        row = {c: table.column(c)[int(i)].as_py() for c in cols}
        rows.append(
            {"list": which, "rank": rank % n + 1, "pred_skip_rate": float(pred_skip_rate[i]), **row}
        )
    return pa.Table.from_pylist(rows)


@dataclass
class Trained:
    """The full model trained on a training set, with its test metrics and predictions."""

    result: FitResult
    data: QualityDataset
    split: np.ndarray
    test_metrics: dict[str, float]
    test_predictions: dict[str, np.ndarray]

    @property
    def test(self) -> QualityDataset:
        return self.data.subset(self.split == "test")


def train_full_model(
    table: pa.Table,
    shape: ModelShape,
    cfg: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    data = to_dataset(table)
    split = np.asarray(table.column("split").to_pylist())
    result = train_variant(data, split, FULL_MODEL, shape, cfg, on_epoch)
    test = data.subset(split == "test")
    metrics, preds = test_metrics(result, test)
    return Trained(result, data, split, metrics, preds)


def gate(new_score: float, current_score: float | None, tolerance: float) -> tuple[bool, str]:
    """Promote unless the new model's mean test Spearman trails the current one by more than
    `tolerance` on the same test days."""
    if current_score is None:
        return True, "no production model yet: the first model becomes production"
    if not np.isfinite(new_score):
        return False, f"new model's mean test Spearman is {new_score}: not promoted"
    delta = new_score - current_score
    if delta >= -tolerance:
        return True, (
            f"mean test Spearman {new_score:.4f} vs production {current_score:.4f} "
            f"(delta {delta:+.4f} >= -{tolerance}): promoted"
        )
    return False, (
        f"mean test Spearman {new_score:.4f} trails production {current_score:.4f} by "
        f"{-delta:.4f} > tolerance {tolerance}: not promoted"
    )


@dataclass
class Report:
    """Everything model_evaluation publishes: tidy metric rows, the demo lists, the figures."""

    rows: list[dict]
    demo: pa.Table
    figures: dict[str, object]

    def table(self, model_version: int) -> pa.Table:
        return pa.Table.from_pylist([{**r, "model_version": model_version} for r in self.rows])


def evaluate_all(
    table: pa.Table,
    full: LoadedModel,
    shape: ModelShape,
    cfg: TrainConfig,
    truth: pa.Table | None,
) -> Report:
    """The §6 evaluation of `full` (the registered model) on the test days of `table`."""
    data = to_dataset(table)
    split = np.asarray(table.column("split").to_pylist())
    test_mask = split == "test"
    test = data.subset(test_mask)
    rows: list[dict] = []

    metrics, preds = test_metrics(full, test)
    rows += metric_rows("model", FULL_MODEL, metrics)
    for ablation in ABLATIONS:
        if ablation == FULL_MODEL:
            rows += metric_rows("ablation", ablation, metrics)
            continue
        log.info("ablation: training %s", ablation)
        variant, _ = test_metrics(train_variant(data, split, ablation, shape, cfg), test)
        rows += metric_rows("ablation", ablation, variant)

    baselines = {
        "creator_prior_mean": creator_mean_baseline(table, split == "train"),
        "lightgbm": gbdt_baseline(data, split, seed=cfg.seed),
    }
    for name, all_preds in baselines.items():
        p = {t: v[test_mask] for t, v in all_preds.items()}
        rows += metric_rows("baseline", name, task_metrics(p, test.targets, test.plays, NAN_LOSSES))
        rows += metric_rows("model_vs_baseline", name, spearman_gaps(preds, p, test, cfg.seed))

    languages = [
        x for x, m in zip(table.column("language").to_pylist(), test_mask, strict=True) if m
    ]
    rows += slice_rows(preds, test, languages)
    test_ids = [
        v for v, m in zip(table.column("video_id").to_pylist(), test_mask, strict=True) if m
    ]
    if truth is not None:
        rows += metric_rows(
            "best_achievable", "simulator_truth", best_achievable(truth, test_ids, test)
        )
    demo = demo_lists(table.filter(pa.array(test_mask)), preds["skip_rate"])
    return Report(rows, demo, figures(preds, test))


def figures(preds: dict[str, np.ndarray], test: QualityDataset) -> dict[str, object]:
    """Calibration of the skip rate by predicted decile, and predicted vs actual per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    p, y, w = preds["skip_rate"], test.targets["skip_rate"], test.plays
    ok = np.isfinite(y) & (w > 0)
    edges = np.quantile(p[ok], np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p[ok], side="right") - 1, 0, 9)
    xs = [
        np.average(p[ok][bins == b], weights=w[ok][bins == b])
        for b in range(10)
        if (bins == b).any()
    ]
    ys = [
        np.average(y[ok][bins == b], weights=w[ok][bins == b])
        for b in range(10)
        if (bins == b).any()
    ]
    ax.plot([0, 1], [0, 1], color="grey", lw=1)
    ax.plot(xs, ys, "o-")
    ax.set(
        xlabel="predicted skip rate",
        ylabel="realised skip rate (play-weighted)",
        title="skip-rate calibration by decile",
    )
    out["calibration_skip_rate.png"] = fig
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, task in zip(axes, ("skips", "avg_watch_time_s", "full_watches"), strict=True):
        ax.scatter(np.log1p(test.targets[task]), np.log1p(preds[task]), s=3, alpha=0.3)
        ax.set(xlabel=f"log1p actual {task}", ylabel="log1p predicted", title=task)
    out["predicted_vs_actual.png"] = fig
    return out
