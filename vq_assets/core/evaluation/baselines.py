"""The baselines a user would otherwise pick, on the same rows: the creator's prior mean, and
gradient-boosted trees (LightGBM) on the model's own features."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, groups_for


def creator_mean_baseline(table: pa.Table, train_rows: np.ndarray) -> dict[str, np.ndarray]:
    """Predict each label by the creator's prior mean; no history -> the train-days mean."""
    out = {}
    for task in tasks.catalogue():
        prior = table.column(f"prior_mean_{task.label}").to_numpy(zero_copy_only=False)
        truth = table.column(task.label).to_numpy(zero_copy_only=False).astype(float)
        fallback = float(np.nanmean(truth[train_rows])) if train_rows.any() else 0.0
        out[task.name] = np.where(np.isnan(prior.astype(float)), fallback, prior.astype(float))
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
    """LightGBM per task (regression on log1p, or cross-entropy weighted by plays for a rate)
    on the model's features (default: the full model's groups); early
    stopping on the validation rows."""
    x, cats = _flat(data, groups or groups_for(FULL_MODEL, data))
    tr, va = split == "train", split == "validation"
    preds = {}
    for task in tasks.catalogue():
        y = data.targets[task.name]
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
        if not task.is_count:
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
        preds[task.name] = np.expm1(raw) if task.is_count else raw
    return preds
