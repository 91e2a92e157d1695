"""The baselines a user would otherwise pick, on the same rows: the creator's prior mean, and
gradient-boosted trees (LightGBM) on the model's own features."""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, groups_for
from vq_assets.core.model.popularity import COMPONENTS, PopularityScale

# LightGBM's objective per task kind; its predictions are then in natural units (after expm1
# for log1p): cross_entropy and poisson predict the mean, not the raw score.
OBJECTIVES = {
    "log1p": "regression",
    "binomial": "cross_entropy",
    "rate": "poisson",
    "ordinal": "regression",
}


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(float)


def creator_mean_baseline(
    table: pa.Table,
    train_rows: np.ndarray,
    task_names: Sequence[str],
    popularity: PopularityScale | None = None,
) -> dict[str, np.ndarray]:
    """Predict each label by the creator's prior mean; no history -> the train-days mean.

    The popularity task's prediction is the score of the creator's prior mean counters (so its
    class is "the creator's prior class"); no history -> the train-days mean score."""
    out = {}
    for task in tasks.catalogue():
        if task.name not in task_names:
            continue
        if task.kind == "ordinal":
            if popularity is None:
                continue
            prior = popularity.score({c: _column(table, f"prior_mean_{c}") for c in COMPONENTS})
            truth = popularity.score({c: _column(table, c) for c in COMPONENTS})
        else:
            prior = _column(table, f"prior_mean_{task.label}")
            truth = _column(table, task.label)
        fallback = float(np.nanmean(truth[train_rows])) if train_rows.any() else 0.0
        out[task.name] = np.where(np.isnan(prior), fallback, prior)
    return out


def _flat(data: QualityDataset, groups: tuple[str, ...]) -> tuple[np.ndarray, list[int]]:
    cols, cats, at = [], [], 0
    for g in groups:
        x = data.features[g]
        if x.dtype.kind == "U":  # a text is a bag of n-grams for the network, not a column
            continue
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
    """LightGBM per task on the model's features (default: the full model's groups), early
    stopping on the validation rows: regression on log1p (counts, times) or on the score
    (popularity), cross-entropy (shares of plays) or Poisson (rates) weighted by plays. Tasks
    without labels on the train or validation rows are left out."""
    x, cats = _flat(data, groups or groups_for(FULL_MODEL, data))
    tr, va = split == "train", split == "validation"
    preds = {}
    for task in tasks.catalogue():
        y = data.targets.get(task.name)
        if y is None or not (np.isfinite(y[tr]).any() and np.isfinite(y[va]).any()):
            continue
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
        weight = data.plays if task.behaviour.per_play else None
        target = np.log1p(y) if task.kind == "log1p" else y
        params["objective"] = OBJECTIVES[task.kind]
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
        preds[task.name] = np.expm1(raw) if task.kind == "log1p" else raw
    return preds
