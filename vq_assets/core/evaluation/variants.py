"""Training variants of the quality model (the full model and its feature ablation) and their
metrics on held-out rows; every variant trains through ``model.train.train_model``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vq_assets.core.evaluation.metrics import mean_spearman, task_metrics
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, groups_for, to_dataset
from vq_assets.core.model.inference import LoadedModel, evaluate
from vq_assets.core.model.loop import FitResult
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.train import train_model


def split_of(table: pa.Table) -> np.ndarray:
    """The `split` column of a training set (train / validation / test per row)."""
    return np.asarray(table.column("split").to_pylist())


def train_variant(
    data: QualityDataset,
    split: np.ndarray,
    ablation: str,
    shape: ModelShape,
    settings: TrainSettings,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """The model restricted to the ablation's feature groups (those the data has, and that vary
    over the training rows)."""
    groups = groups_for(ablation, data, split == "train")
    return train_model(data, split, groups, shape, settings, on_epoch)


def test_metrics(
    result: FitResult | LoadedModel, test: QualityDataset
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The §6 metric table on the test rows, and the predictions behind it. An ordinal task's
    labels are cut by the model's own popularity scale (the one of its training days)."""
    scale = result.model.config.popularity
    test = test.with_popularity(scale)
    ev = evaluate(result.model, result.normalizer, test)
    metrics = task_metrics(ev.predictions, test.targets, test.plays, ev.losses, popularity=scale)
    return metrics, ev.predictions


def mean_test_spearman(model: LoadedModel, test: QualityDataset, task_names: list[str]) -> float:
    """The promotion gate's score: mean Spearman over ``task_names`` on `test`."""
    return mean_spearman(test_metrics(model, test)[0], task_names)


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
    settings: TrainSettings,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Trained:
    data, split = to_dataset(table), split_of(table)
    result = train_variant(data, split, FULL_MODEL, shape, settings, on_epoch)
    metrics, preds = test_metrics(result, data.subset(split == "test"))
    return Trained(result, data, split, metrics, preds)
