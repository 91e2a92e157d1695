"""Using a trained network: predictions, losses on labelled rows, head recalibration, and the
model files (safetensors + JSON, nothing pickled)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import safetensors.torch
import torch
from torch.utils.data import DataLoader

from vq_assets.core.model import tasks as tasks_
from vq_assets.core.model.dataset import QualityDataset, TensorRows
from vq_assets.core.model.distributed import GlobalBatchSampler
from vq_assets.core.model.loop import forward, loader, stacked_loss_terms, task_means
from vq_assets.core.model.network import (
    NetworkConfig,
    QualityEnsemble,
    QualityModel,
    build_model,
    to_natural_units,
)
from vq_assets.core.model.normalizer import FeatureNormalizer

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORMALIZER_FILE = "normalizer.json"


class Evaluation(NamedTuple):
    predictions: dict[str, np.ndarray]  # natural units
    losses: dict[str, float]  # per task, as trained


@torch.no_grad()
def recalibrate_heads(
    model: QualityModel | QualityEnsemble, normalizer: FeatureNormalizer, val: QualityDataset
) -> dict[str, float]:
    """Shift every head's bias so that its mean prediction on the validation rows matches the
    labels (each task's ``Kind.shift``: log1p heads by the mean residual, rate heads so that
    predicted events equal realised ones). Returns the shifts, in training space.

    Dropout, group dropout above all, trains the network on thinned inputs; the whole network
    at inference sits at a slightly different level (a 7% skip under-prediction on the demo
    world with ``group_dropout=0.25``). A constant shift per head restores calibration and
    leaves every ranking, hence every Spearman, unchanged.
    """
    with torch.random.fork_rng(devices=[]):  # the loader draws a seed; leave the caller's RNG
        predictions = evaluate(model, normalizer, val).predictions
    members = model.members if isinstance(model, QualityEnsemble) else [model]
    shifts = {}
    for task in model.config.tasks:
        y = np.asarray(val.targets[task], dtype=np.float64)
        pred = predictions[task]
        plays = np.asarray(val.plays, dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(pred)
        shift = tasks_.task(task).behaviour.shift(pred[ok], y[ok], plays[ok]) if ok.any() else 0.0
        for member in members:
            member.heads.heads[task].bias += shift
        shifts[task] = shift
    logger.info("recalibrated heads on %d validation rows: %s", len(val), shifts)
    return shifts


def _eval_loader(
    model: QualityModel | QualityEnsemble,
    normalizer: FeatureNormalizer,
    dataset: QualityDataset,
    batch_size: int,
    with_labels: bool,
) -> tuple[DataLoader, torch.device]:
    device = next(model.parameters()).device
    rows = TensorRows(dataset, normalizer, model.config, with_labels=with_labels)
    sampler = GlobalBatchSampler(len(rows), batch_size, shuffle=False)
    return loader(rows, sampler, 0, device), device


def predict(
    model: QualityModel | QualityEnsemble,
    normalizer: FeatureNormalizer,
    dataset: QualityDataset,
    batch_size: int = 8192,
) -> dict[str, np.ndarray]:
    """``{task: [n] float64}`` predictions in natural units, on the model's device, fp32.
    Only ``dataset.features`` is read, so unlabelled (new) videos can be scored."""
    loader, device = _eval_loader(model, normalizer, dataset, batch_size, with_labels=False)
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    for outputs, _ in forward(model, loader, device, "fp32"):
        for task, values in to_natural_units(outputs).items():
            chunks[task].append(values.cpu().numpy().astype(np.float64))
    return {t: np.concatenate(c) if c else np.zeros(0) for t, c in chunks.items()}


class _Stacked(torch.nn.Module):
    """Every member's training-space output, stacked: ``{task: [B, members]}``."""

    def __init__(self, model: QualityModel | QualityEnsemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        members = self.model.members if isinstance(self.model, QualityEnsemble) else [self.model]
        outputs = [m(features) for m in members]
        return {t: torch.stack([o[t] for o in outputs], 1) for t in self.model.config.tasks}


class MemberPredictions(NamedTuple):
    mean: dict[str, np.ndarray]  # {task: [n]} the ensemble's prediction, as ``predict``
    members: dict[str, np.ndarray]  # {task: [n, members]} each member's, natural units


def predict_members(
    model: QualityModel | QualityEnsemble,
    normalizer: FeatureNormalizer,
    dataset: QualityDataset,
    batch_size: int = 8192,
) -> MemberPredictions:
    """``predict`` plus every member's own prediction, from one pass over the rows: the
    members' disagreement is the model's predictive spread (a single network has one member).
    The ensemble mean is taken in training space, exactly as ``QualityEnsemble`` does."""
    loader, device = _eval_loader(model, normalizer, dataset, batch_size, with_labels=False)
    means: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    members: dict[str, list[np.ndarray]] = {t: [] for t in model.config.tasks}
    for outputs, _ in forward(_Stacked(model), loader, device, "fp32"):
        mean = to_natural_units({t: v.mean(1) for t, v in outputs.items()})
        for task, values in to_natural_units(outputs).items():
            members[task].append(values.cpu().numpy().astype(np.float64))
            means[task].append(mean[task].cpu().numpy().astype(np.float64))
    width = model.config.shape.members
    return MemberPredictions(
        {t: np.concatenate(c) if c else np.zeros(0) for t, c in means.items()},
        {t: np.concatenate(c) if c else np.zeros((0, width)) for t, c in members.items()},
    )


def evaluate(
    model: QualityModel | QualityEnsemble,
    normalizer: FeatureNormalizer,
    dataset: QualityDataset,
    batch_size: int = 8192,
) -> Evaluation:
    """Predictions (natural units) and per-task losses (as trained) on labelled rows; feed both
    to ``metrics.task_metrics``."""
    loader, device = _eval_loader(model, normalizer, dataset, batch_size, with_labels=True)
    tasks = model.config.tasks
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    sums = torch.zeros(len(tasks), device=device)
    weights = torch.zeros(len(tasks), device=device)
    for outputs, (_, targets, plays) in forward(model, loader, device, "fp32"):
        batch_sums, batch_weights = stacked_loss_terms(outputs, targets, plays, model.config)
        sums += batch_sums
        weights += batch_weights
        for task, values in to_natural_units(outputs).items():
            chunks[task].append(values.cpu().numpy().astype(np.float64))
    predictions = {t: np.concatenate(c) if c else np.zeros(0) for t, c in chunks.items()}
    return Evaluation(predictions, task_means(tasks, sums, weights))


def save_model(
    directory: str | Path,
    model: QualityModel | QualityEnsemble,
    model_config: NetworkConfig,
    normalizer: FeatureNormalizer,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``normalizer.json`` (no pickled code)."""
    if model_config != model.config:
        raise ValueError("model_config does not describe this model")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, directory / MODEL_FILE, metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(model_config.to_dict(), indent=2))
    (directory / NORMALIZER_FILE).write_text(json.dumps(normalizer.to_dict()))
    return directory


class LoadedModel(NamedTuple):
    model: QualityModel | QualityEnsemble
    config: NetworkConfig
    normalizer: FeatureNormalizer


def load_model(directory: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild what ``save_model`` wrote; the model is in eval mode on ``device``."""
    directory = Path(directory)
    config = NetworkConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    normalizer = FeatureNormalizer.from_dict(json.loads((directory / NORMALIZER_FILE).read_text()))
    model = build_model(config)
    model.load_state_dict(safetensors.torch.load_file(directory / MODEL_FILE, device="cpu"))
    return LoadedModel(model.to(device).eval(), config, normalizer)
