"""Per-epoch checkpoints of one network's training, resumed only by the same run."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vq_assets.core.model.network import NetworkConfig, QualityModel
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.settings import TrainSettings

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class FitState:
    """Everything besides model/optimizer that a resumed run needs."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def fingerprint(
    model_config: NetworkConfig, cfg: TrainSettings, normalizer: FeatureNormalizer
) -> str:
    """What must match for a checkpoint to be resumed (epochs, patience and device may change)."""
    keys = ("lr", "weight_decay", "batch_size", "seed", "precision")
    return json.dumps(
        {
            "model": model_config.to_dict(),
            "train": {k: asdict(cfg)[k] for k in keys},
            "normalizer": normalizer.to_dict(),
        },
        sort_keys=True,
    )


def save_checkpoint(
    path: Path,
    model: QualityModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: FitState,
    fingerprint: str,
) -> None:
    payload = {
        "fingerprint": fingerprint,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        **vars(state),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(
    path: Path,
    model: QualityModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    fingerprint: str,
) -> FitState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.pop("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {path} was written for another model/training config or training data; "
            "point checkpoint_dir somewhere fresh"
        )
    model.load_state_dict(payload.pop("model"))
    optimizer.load_state_dict(payload.pop("optimizer"))
    scaler.load_state_dict(payload.pop("scaler"))
    return FitState(**payload)
