"""CDML files in safetensors, nothing pickled: per-epoch training checkpoints (resumed only by
the same run) and the trained tower itself.

One file each. Tensors go in the safetensors body, everything else (config, fingerprint,
epoch, history, the optimizer's scalar state) as JSON in its header metadata, so a checkpoint
is written with one atomic `os.replace` and read without unpickling anything.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vq_assets.core.related.cdml_tower import CDMLConfig, CDMLTower

CHECKPOINT_FILE = "cdml_checkpoint.safetensors"
TOWER_FILE = "cdml_tower.safetensors"


@dataclass
class CDMLFitState:
    """Everything besides tower/optimizer that a resumed run needs."""

    epoch: int = 0
    best_epoch: int = 0
    best_recall: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    body = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(body, str(tmp), metadata={"json": json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous file intact


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
    return tensors, meta


def save_tower(path: Path, tower: CDMLTower) -> None:
    """The trained tower: its weights and normalisation buffers, with its config."""
    _write(Path(path), tower.state_dict(), {"config": tower.config.to_dict()})


def load_tower(path: Path) -> CDMLTower:
    tensors, meta = _read(Path(path))
    if "config" not in meta:
        raise ValueError(f"{path} is not a CDML tower file (no config in its metadata)")
    tower = CDMLTower(CDMLConfig.from_dict(meta["config"]))
    tower.load_state_dict(tensors)
    return tower.eval()


def save_checkpoint(
    path: Path,
    tower: CDMLTower,
    optimizer: torch.optim.Optimizer,
    state: CDMLFitState,
    fingerprint: str,
) -> None:
    tensors = {f"model.{k}": v for k, v in tower.state_dict().items()}
    tensors |= {f"best.{k}": v for k, v in state.best_state.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    meta = {
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "best_epoch": state.best_epoch,
        "best_recall": state.best_recall if math.isfinite(state.best_recall) else None,
        "history": state.history,
        "optimizer_scalars": scalars,
    }
    _write(Path(path), tensors, meta)


def load_checkpoint(
    path: Path, tower: CDMLTower, optimizer: torch.optim.Optimizer, fingerprint: str
) -> CDMLFitState:
    tensors, meta = _read(Path(path))
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {path} was written for another CDML config or training data; "
            "point checkpoint_dir somewhere fresh"
        )
    tower.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            optim_state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["optimizer_scalars"].items():
        optim_state.setdefault(int(idx), {}).update(values)
    # Param groups (lr, betas, ...) come from the config the fingerprint already matched.
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
    best = meta["best_recall"]
    return CDMLFitState(
        epoch=meta["epoch"],
        best_epoch=meta["best_epoch"],
        best_recall=-math.inf if best is None else best,
        history=meta["history"],
        best_state={k[5:]: v for k, v in tensors.items() if k.startswith("best.")},
    )
