"""Training of the quality model: data container, feature normaliser, ``fit``/``predict``,
checkpoint/resume, data-parallel training and the ``main(argv)`` entry point.

Run it directly (facebookresearch/dlrm style)::

    python -m vq_assets.core.train --synthetic 20000 --out /tmp/model --epochs 5
    torchrun --standalone --nproc_per_node=2 -m vq_assets.core.train --data set.npz --out DIR

``TrainConfig.batch_size`` is the *global* batch size: under ``torchrun`` every global batch is
split across ranks, so N processes take exactly the optimisation steps one process would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import safetensors.torch
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from vq_assets.core.model import (
    TASK_KINDS,
    ModelConfig,
    QualityEnsemble,
    QualityModel,
    build_model,
    loss_terms,
    to_natural_units,
)

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
# (features, targets, plays) as tensors for one (per-rank) batch.
Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORMALIZER_FILE = "normalizer.json"


# --------------------------------------------------------------------------- data


@dataclass
class QualityDataset:
    """In-memory rows: one per video.

    Args:
        features: group name -> ``[n, d]`` float array (dense, NaN allowed) or ``[n]`` integer
            array (categorical index). May hold more groups than a model uses.
        targets: task name -> ``[n]`` float array in natural units, NaN for null. Empty when the
            dataset is only scored.
        plays: ``[n]`` play counts (weights of the skip-rate likelihood); None when only scored.
    """

    features: dict[str, np.ndarray]
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    plays: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("QualityDataset needs at least one feature group")
        lengths = {f"feature {k}": len(v) for k, v in self.features.items()}
        lengths |= {f"target {k}": len(v) for k, v in self.targets.items()}
        if self.plays is not None:
            lengths["plays"] = len(self.plays)
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.features.values())))

    def subset(self, rows: np.ndarray | slice) -> QualityDataset:
        return QualityDataset(
            features={k: v[rows] for k, v in self.features.items()},
            targets={k: v[rows] for k, v in self.targets.items()},
            plays=None if self.plays is None else self.plays[rows],
        )

    def save_npz(self, path: str | Path) -> None:
        arrays = {f"feature/{k}": v for k, v in self.features.items()}
        arrays |= {f"target/{k}": v for k, v in self.targets.items()}
        if self.plays is not None:
            arrays["plays"] = self.plays
        np.savez(path, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path) -> QualityDataset:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            features={k[8:]: v for k, v in arrays.items() if k.startswith("feature/")},
            targets={k[7:]: v for k, v in arrays.items() if k.startswith("target/")},
            plays=arrays.get("plays"),
        )


def infer_groups(dataset: QualityDataset) -> tuple[dict[str, int], dict[str, int]]:
    """``(dense_dims, cat_cardinalities)`` of a dataset: 2-D float groups are dense, 1-D integer
    groups categorical with cardinality ``max + 1`` (so infer on all rows, not a split)."""
    dense, cats = {}, {}
    for name, values in dataset.features.items():
        if values.ndim == 2 and np.issubdtype(values.dtype, np.floating):
            dense[name] = int(values.shape[1])
        elif values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
            cats[name] = int(values.max()) + 1 if len(values) else 1
        else:
            raise ValueError(
                f"group {name!r}: expected [n, d] float or [n] int, got "
                f"{values.dtype} {values.shape}"
            )
    return dense, cats


# Whitening regulariser: eigenvalues below WHITEN_EPS * the largest are not blown up to unit
# variance, so near-degenerate directions of an embedding stay small instead of becoming noise.
WHITEN_EPS = 1e-3


@dataclass
class FeatureNormalizer:
    """Per-column standardisation of the dense groups, and optional whitening, fitted on training
    rows only.

    NaN-safe: statistics ignore NaN, and a NaN feature becomes 0 (the training mean) after
    ``transform``. Columns that are constant or all-NaN get std 1 so they pass through as 0.

    A whitened group is standardised, then rotated onto its principal axes and scaled to unit
    variance per axis (``z @ rotation``, PCA whitening). An embedding whose columns are strongly
    correlated (a few directions carry most of the variance) is badly conditioned for gradient
    descent: the directions with little variance are learnt last, after the rest of the network
    has started to overfit. Whitening lets every direction be learnt at the same pace.
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    rotation: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        features: Mapping[str, np.ndarray],
        groups: Sequence[str],
        whiten: Sequence[str] = (),
    ) -> FeatureNormalizer:
        mean, std = {}, {}
        for name in groups:
            x = np.asarray(features[name], dtype=np.float64)
            finite = np.isfinite(x)
            n = finite.sum(axis=0)
            clean = np.where(finite, x, 0.0)
            m = clean.sum(axis=0) / np.maximum(n, 1)
            var = (np.where(finite, x - m, 0.0) ** 2).sum(axis=0) / np.maximum(n, 1)
            s = np.sqrt(var)
            mean[name] = m
            std[name] = np.where(s > 1e-6, s, 1.0)
        norm = cls(mean, std)
        unknown = [g for g in whiten if g not in mean]
        if unknown:
            raise ValueError(f"cannot whiten {unknown}: not among the dense groups {list(mean)}")
        for name in whiten:
            z = norm._standardise(name, features[name])
            eigval, eigvec = np.linalg.eigh(z.T @ z / max(len(z), 1))
            eigval = np.clip(eigval, 0.0, None)
            norm.rotation[name] = eigvec / np.sqrt(eigval + WHITEN_EPS * max(eigval.max(), 1e-12))
        return norm

    def _standardise(self, name: str, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean[name]) / self.std[name]
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def transform(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Normalised float32 copies of the fitted groups; other groups are passed through."""
        out = dict(features)
        for name in self.mean:
            z = self._standardise(name, features[name])
            if name in self.rotation:
                z = z @ self.rotation[name]
            out[name] = z.astype(np.float32)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.mean:
            out[name] = {"mean": self.mean[name].tolist(), "std": self.std[name].tolist()}
            if name in self.rotation:
                out[name]["rotation"] = self.rotation[name].tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureNormalizer:
        return cls(
            mean={k: np.asarray(v["mean"], dtype=np.float64) for k, v in d.items()},
            std={k: np.asarray(v["std"], dtype=np.float64) for k, v in d.items()},
            rotation={
                k: np.asarray(v["rotation"], dtype=np.float64)
                for k, v in d.items()
                if "rotation" in v
            },
        )


class _TensorRows(Dataset):
    """Normalised tensors of a ``QualityDataset`` restricted to the model's groups and tasks.

    ``__getitems__`` serves a whole batch with one index per column instead of collating B rows.
    """

    def __init__(
        self,
        dataset: QualityDataset,
        normalizer: FeatureNormalizer,
        config: ModelConfig,
        with_labels: bool,
    ) -> None:
        missing = [g for g in config.groups if g not in dataset.features]
        if missing:
            raise ValueError(f"dataset lacks feature groups {missing}")
        features = normalizer.transform({g: dataset.features[g] for g in config.groups})
        self.features: dict[str, torch.Tensor] = {}
        for name, dim in config.dense_dims.items():
            if features[name].shape[1:] != (dim,):
                raise ValueError(f"group {name!r}: expected [n, {dim}], got {features[name].shape}")
            self.features[name] = torch.from_numpy(features[name])
        for name, card in config.cat_cardinalities.items():
            idx = np.asarray(features[name])
            if len(idx) and (idx.min() < 0 or idx.max() >= card):
                raise ValueError(f"group {name!r}: indices must lie in [0, {card})")
            self.features[name] = torch.from_numpy(idx.astype(np.int64))
        n = len(dataset)
        self.targets: dict[str, torch.Tensor] = {}
        self.plays = torch.zeros(n)
        if with_labels:
            if dataset.plays is None or any(t not in dataset.targets for t in config.tasks):
                raise ValueError(f"training needs plays and targets for tasks {config.tasks}")
            self.targets = {
                t: torch.from_numpy(np.asarray(dataset.targets[t], dtype=np.float32))
                for t in config.tasks
            }
            self.plays = torch.from_numpy(np.asarray(dataset.plays, dtype=np.float32))
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, rows: list[int]) -> Batch:
        i = torch.as_tensor(rows, dtype=torch.long)
        return (
            {k: v[i] for k, v in self.features.items()},
            {k: v[i] for k, v in self.targets.items()},
            self.plays[i],
        )


def _batch_as_is(batch: Batch) -> Batch:
    # Module-level (picklable) collate: _TensorRows already returns a collated batch.
    return batch


class GlobalBatchSampler(Sampler[list[int]]):
    """Cuts each epoch into *global* batches and yields this rank's contiguous share of each.

    The permutation depends only on ``(seed, epoch)``, so every rank draws the same global
    batches, and W ranks with shares of ``batch_size / W`` see exactly the rows that one process
    with ``batch_size`` sees. Every rank yields one (possibly empty) share per global batch, so
    ranks always take the same number of steps.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.num_rows, self.batch_size = num_rows, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.num_rows / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=g)
        else:
            order = torch.arange(self.num_rows)
        for start in range(0, self.num_rows, self.batch_size):
            batch = order[start : start + self.batch_size]
            yield torch.tensor_split(batch, self.world_size)[self.rank].tolist()


# --------------------------------------------------------------------------- config, results


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Args:
        batch_size: global batch size (split across ranks under torchrun).
        patience: stop after this many epochs without a lower validation loss.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; under torchrun ``cuda`` means the
            rank's ``LOCAL_RANK`` GPU.
        precision: ``fp32``; ``bf16`` (CPU or CUDA autocast); ``fp16`` (CUDA autocast with a
            gradient scaler).
        checkpoint_dir: if set, a checkpoint is written there every epoch and training resumes
            from it when it exists.
        whiten: dense groups to whiten (see ``FeatureNormalizer``) when the model uses them.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 512
    max_epochs: int = 20
    patience: int = 3
    seed: int = 0
    device: str = "cpu"
    precision: Precision = "fp32"
    checkpoint_dir: str | None = None
    num_workers: int = 0
    whiten: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {self.precision!r}")


@dataclass
class FitResult:
    """The trained model (best validation epoch, eval mode) and how it got there.

    ``history`` holds one record per epoch, the same dicts that ``on_epoch`` receives.
    """

    model: QualityModel | QualityEnsemble
    normalizer: FeatureNormalizer
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    best_val_task_losses: dict[str, float]
    stopped_early: bool


class Evaluation(NamedTuple):
    predictions: dict[str, np.ndarray]  # natural units
    losses: dict[str, float]  # per task, as trained


@dataclass
class _FitState:
    """Everything besides model/optimizer that a resumed run needs."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- distributed helpers


class _Dist(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def _dist_context() -> _Dist:
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return _Dist(dist.get_rank(), dist.get_world_size(), local)
    return _Dist(0, 1, 0)


def _all_reduce_sum(t: torch.Tensor, ctx: _Dist) -> torch.Tensor:
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def _barrier(ctx: _Dist) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def _resolve_device(name: str, ctx: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    return device


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Dropout draws from the global RNG; reseeding it from (seed, epoch, rank) at every epoch makes
    # a resumed run draw the same masks as an uninterrupted one without saving per-rank RNG state.
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# --------------------------------------------------------------------------- loops


def _to_device(batch: Batch, device: torch.device) -> Batch:
    features, targets, plays = batch
    nb = device.type == "cuda"
    return (
        {k: v.to(device, non_blocking=nb) for k, v in features.items()},
        {k: v.to(device, non_blocking=nb) for k, v in targets.items()},
        plays.to(device, non_blocking=nb),
    )


def _loader(
    rows: _TensorRows, sampler: GlobalBatchSampler, num_workers: int, device: torch.device
) -> DataLoader:
    return DataLoader(
        rows,
        batch_sampler=sampler,
        collate_fn=_batch_as_is,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


def _train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    ctx: _Dist,
) -> tuple[dict[str, float], int]:
    """One pass over the training rows; returns per-task train losses and the global row count."""
    tasks = config.tasks
    model.train()
    sums = torch.zeros(len(tasks), device=device)
    weights = torch.zeros(len(tasks), device=device)
    rows = torch.zeros(1, device=device)
    for batch in loader:
        features, targets, plays = _to_device(batch, device)
        with _autocast(device, precision):
            outputs = model(features)
        local_sum, local_weight = _stacked_loss_terms(outputs, targets, plays, config)
        global_weight = _all_reduce_sum(local_weight.clone(), ctx)
        # Each rank divides its *sum* by the *global* weight; DDP then averages gradients over
        # ranks, so multiplying by world_size yields d(global sum / global weight), exactly the
        # gradient of one process on the whole global batch.
        denom = torch.where(global_weight > 0, global_weight, torch.ones_like(global_weight))
        loss = (local_sum / denom).sum() * ctx.world_size
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sums += local_sum.detach()
        weights += local_weight
        rows += plays.shape[0]
    sums, weights, rows = (_all_reduce_sum(t, ctx) for t in (sums, weights, rows))
    return _task_means(tasks, sums, weights), int(rows.item())


def _stacked_loss_terms(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    plays: torch.Tensor,
    config: ModelConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_terms`` as two ``[T]`` vectors (sums, weights) in ``config.tasks`` order."""
    terms = loss_terms(outputs, targets, plays, config.watch_time_prior_plays)
    tasks = config.tasks
    return torch.stack([terms[t][0] for t in tasks]), torch.stack([terms[t][1] for t in tasks])


def _task_means(
    tasks: Sequence[str], sums: torch.Tensor, weights: torch.Tensor
) -> dict[str, float]:
    return {
        t: float(s / w) if w > 0 else float("nan")
        for t, s, w in zip(tasks, sums.tolist(), weights.tolist(), strict=True)
    }


@torch.no_grad()
def _forward(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision
) -> Iterator[tuple[dict[str, torch.Tensor], Batch]]:
    model.eval()
    for batch in loader:
        batch = _to_device(batch, device)
        with _autocast(device, precision):
            outputs = model(batch[0])
        yield {k: v.float() for k, v in outputs.items()}, batch


def _eval_losses(
    model: torch.nn.Module,
    loader: DataLoader,
    config: ModelConfig,
    device: torch.device,
    precision: Precision,
    ctx: _Dist,
) -> dict[str, float]:
    tasks = config.tasks
    sums = torch.zeros(len(tasks), device=device)
    weights = torch.zeros(len(tasks), device=device)
    for outputs, (_, targets, plays) in _forward(model, loader, device, precision):
        batch_sums, batch_weights = _stacked_loss_terms(outputs, targets, plays, config)
        sums += batch_sums
        weights += batch_weights
    return _task_means(tasks, _all_reduce_sum(sums, ctx), _all_reduce_sum(weights, ctx))


def _head_bias(dataset: QualityDataset, tasks: Sequence[str]) -> dict[str, float]:
    """Base rates on the training rows: mean log1p(target), or the logit of the pooled rate."""
    bias = {}
    for task in tasks:
        y = np.asarray(dataset.targets[task], dtype=np.float64)
        ok = np.isfinite(y)  # fit() has checked that every task has labels
        if TASK_KINDS[task] == "log1p":
            bias[task] = float(np.log1p(y[ok]).mean())
        else:
            plays = np.asarray(dataset.plays, dtype=np.float64)[ok]
            rate = float(np.clip((y[ok] * plays).sum() / max(plays.sum(), 1.0), 1e-4, 1 - 1e-4))
            bias[task] = math.log(rate / (1 - rate))
    return bias


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only; biases and LayerNorm gains are not decayed (standard AdamW practice).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _fingerprint(model_config: ModelConfig, cfg: TrainConfig, normalizer: FeatureNormalizer) -> str:
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


def _save_checkpoint(
    path: Path,
    model: QualityModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: _FitState,
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


def _load_checkpoint(
    path: Path,
    model: QualityModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    fingerprint: str,
) -> _FitState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.pop("fingerprint") != fingerprint:
        raise ValueError(
            f"checkpoint {path} was written for another model/training config or training data; "
            "point checkpoint_dir somewhere fresh"
        )
    model.load_state_dict(payload.pop("model"))
    optimizer.load_state_dict(payload.pop("optimizer"))
    scaler.load_state_dict(payload.pop("scaler"))
    return _FitState(**payload)


# --------------------------------------------------------------------------- public API


def fit(
    model_config: ModelConfig,
    train_cfg: TrainConfig,
    train: QualityDataset,
    val: QualityDataset,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train a ``QualityModel`` with AdamW and early stopping on the validation loss.

    Seeded and deterministic on CPU; the caller's torch RNG state is left untouched. Under an
    initialised ``torch.distributed`` process group the model is wrapped in DDP, each rank takes
    its share of every global batch, and ``on_epoch``/logging happen on rank 0 only.

    ``on_epoch`` receives ``{"epoch", "train_loss", "val_loss", "train_loss_<task>",
    "val_loss_<task>", "samples_per_s", "epoch_time_s"}`` after every epoch.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"need train and validation rows, got {len(train)} and {len(val)}")
    if model_config.members > 1:
        raise ValueError("fit trains one network; use fit_ensemble for members > 1")
    ctx = _dist_context()
    device = _resolve_device(train_cfg.device, ctx)
    if train_cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs CUDA; use bf16 on CPU")
    tasks = model_config.tasks
    normalizer = FeatureNormalizer.fit(
        train.features,
        list(model_config.dense_dims),
        whiten=[g for g in train_cfg.whiten if g in model_config.dense_dims],
    )
    train_rows = _TensorRows(train, normalizer, model_config, with_labels=True)
    val_rows = _TensorRows(val, normalizer, model_config, with_labels=True)
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        # A task without a single label has an undefined loss, and early stopping would never
        # see a finite validation loss; say so up front.
        unlabelled = [t for t, y in rows.targets.items() if not (~torch.isnan(y)).any()]
        if unlabelled:
            raise ValueError(f"{split} rows have no labels for tasks {unlabelled}")
    cuda_devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(train_cfg.seed)
        model = QualityModel(model_config)
        model.init_head_bias(_head_bias(train, tasks))
        model.to(device)
        optimizer = torch.optim.AdamW(_param_groups(model, train_cfg.weight_decay), lr=train_cfg.lr)
        scaler = torch.amp.GradScaler("cuda", enabled=train_cfg.precision == "fp16")
        fingerprint = _fingerprint(model_config, train_cfg, normalizer)
        ckpt_dir = train_cfg.checkpoint_dir
        ckpt = Path(ckpt_dir) / CHECKPOINT_FILE if ckpt_dir else None
        state = _FitState()
        if ckpt is not None and ckpt.exists():
            state = _load_checkpoint(ckpt, model, optimizer, scaler, fingerprint)
            logger.info("resuming from %s after epoch %d", ckpt, state.epoch)
        ddp_model: torch.nn.Module = model
        if ctx.world_size > 1:
            ddp_model = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        sampler = GlobalBatchSampler(
            len(train_rows),
            train_cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle=True,
            seed=train_cfg.seed,
        )
        val_sampler = GlobalBatchSampler(
            len(val_rows),
            train_cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle=False,
        )
        train_loader = _loader(train_rows, sampler, train_cfg.num_workers, device)
        val_loader = _loader(val_rows, val_sampler, train_cfg.num_workers, device)

        while state.epoch < train_cfg.max_epochs and not state.stopped:
            epoch = state.epoch + 1
            sampler.set_epoch(epoch)
            torch.manual_seed(_epoch_seed(train_cfg.seed, epoch, ctx.rank))
            start = time.perf_counter()
            train_losses, rows = _train_epoch(
                ddp_model,
                train_loader,
                optimizer,
                scaler,
                model_config,
                device,
                train_cfg.precision,
                ctx,
            )
            train_time = time.perf_counter() - start
            val_losses = _eval_losses(
                model, val_loader, model_config, device, train_cfg.precision, ctx
            )
            record: dict[str, float] = {
                "epoch": epoch,
                "train_loss": sum(train_losses.values()),
                "val_loss": sum(val_losses.values()),
                **{f"train_loss_{t}": v for t, v in train_losses.items()},
                **{f"val_loss_{t}": v for t, v in val_losses.items()},
                "samples_per_s": rows / train_time,
                "epoch_time_s": time.perf_counter() - start,
            }
            state.history.append(record)
            if record["val_loss"] < state.best_val_loss:  # NaN never counts as an improvement
                state.best_val_loss, state.best_epoch, state.bad_epochs = (
                    record["val_loss"],
                    epoch,
                    0,
                )
                state.best_state = {
                    k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                }
            else:
                state.bad_epochs += 1
            state.epoch = epoch
            state.stopped = state.bad_epochs >= train_cfg.patience
            if ckpt is not None:
                if ctx.rank == 0:
                    ckpt.parent.mkdir(parents=True, exist_ok=True)
                    _save_checkpoint(ckpt, model, optimizer, scaler, state, fingerprint)
                _barrier(ctx)
            if ctx.rank == 0:
                logger.info(
                    "epoch %d/%d train_loss=%.4f val_loss=%.4f (best %.4f @ %d) %.0f samples/s",
                    epoch,
                    train_cfg.max_epochs,
                    record["train_loss"],
                    record["val_loss"],
                    state.best_val_loss,
                    state.best_epoch,
                    record["samples_per_s"],
                )
                if on_epoch is not None:
                    on_epoch(record)

    if not state.best_state:
        raise RuntimeError("no epoch gave a finite validation loss (diverged, or max_epochs=0)")
    model.load_state_dict(state.best_state)
    model.eval()
    best = state.history[state.best_epoch - 1]
    return FitResult(
        model=model,
        normalizer=normalizer,
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        best_val_task_losses={t: best[f"val_loss_{t}"] for t in tasks},
        stopped_early=state.stopped,
    )


def _logit_shift(logits: np.ndarray, rate: np.ndarray, plays: np.ndarray) -> float:
    """The constant d with sum(plays * sigmoid(logits + d)) = sum(plays * rate), by bisection
    (the left side increases with d)."""
    target = float((plays * rate).sum())
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        if float((plays / (1 + np.exp(-(logits + mid)))).sum()) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@torch.no_grad()
def recalibrate_heads(
    model: QualityModel | QualityEnsemble, normalizer: FeatureNormalizer, val: QualityDataset
) -> dict[str, float]:
    """Shift every head's bias so that its mean prediction on the validation rows matches the
    labels: log1p heads by the mean residual, the skip-rate head so that predicted skips equal
    the realised skips (play-weighted). Returns the shifts, in training space.

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
        ok = np.isfinite(y) & np.isfinite(pred)
        if TASK_KINDS[task] == "log1p":
            shift = float(np.mean(np.log1p(y[ok]) - np.log1p(pred[ok]))) if ok.any() else 0.0
        else:
            plays = np.asarray(val.plays, dtype=np.float64)
            ok &= plays > 0
            p = np.clip(pred[ok], 1e-7, 1 - 1e-7)
            shift = _logit_shift(np.log(p / (1 - p)), y[ok], plays[ok]) if ok.any() else 0.0
        for member in members:
            member.heads.heads[task].bias += shift
        shifts[task] = shift
    logger.info("recalibrated heads on %d validation rows: %s", len(val), shifts)
    return shifts


def fit_ensemble(
    model_config: ModelConfig,
    train_cfg: TrainConfig,
    train: QualityDataset,
    val: QualityDataset,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """``fit`` once per member with seeds seed, seed+1, ..., averaged into one model.

    Every member sees the same data and the same normaliser (fitted on the train rows); only
    the initialisation, the shuffling and dropout differ. ``on_epoch`` records carry
    ``member``; checkpoints go to ``checkpoint_dir/member<k>``.
    """
    if model_config.members == 1:
        return fit(model_config, train_cfg, train, val, on_epoch=on_epoch)
    single = replace(model_config, members=1)
    results = []
    for k in range(model_config.members):
        ckpt = train_cfg.checkpoint_dir
        cfg = replace(
            train_cfg,
            seed=train_cfg.seed + k,
            checkpoint_dir=None if ckpt is None else str(Path(ckpt) / f"member{k}"),
        )
        member_log = None if on_epoch is None else (lambda r, k=k: on_epoch({**r, "member": k}))
        results.append(fit(single, cfg, train, val, on_epoch=member_log))
    ensemble = QualityEnsemble(model_config)
    for member, result in zip(ensemble.members, results, strict=True):
        member.load_state_dict(result.model.state_dict())
    ensemble.to(next(results[0].model.parameters()).device).eval()
    ev = evaluate(ensemble, results[0].normalizer, val)
    return FitResult(
        model=ensemble,
        normalizer=results[0].normalizer,
        history=[{**h, "member": k} for k, r in enumerate(results) for h in r.history],
        best_epoch=max(r.best_epoch for r in results),
        best_val_loss=float(sum(ev.losses.values())),
        best_val_task_losses=ev.losses,
        stopped_early=all(r.stopped_early for r in results),
    )


def _eval_loader(
    model: QualityModel | QualityEnsemble,
    normalizer: FeatureNormalizer,
    dataset: QualityDataset,
    batch_size: int,
    with_labels: bool,
) -> tuple[DataLoader, torch.device]:
    device = next(model.parameters()).device
    rows = _TensorRows(dataset, normalizer, model.config, with_labels=with_labels)
    sampler = GlobalBatchSampler(len(rows), batch_size, shuffle=False)
    return _loader(rows, sampler, 0, device), device


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
    for outputs, _ in _forward(model, loader, device, "fp32"):
        for task, values in to_natural_units(outputs).items():
            chunks[task].append(values.cpu().numpy().astype(np.float64))
    return {t: np.concatenate(c) if c else np.zeros(0) for t, c in chunks.items()}


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
    for outputs, (_, targets, plays) in _forward(model, loader, device, "fp32"):
        batch_sums, batch_weights = _stacked_loss_terms(outputs, targets, plays, model.config)
        sums += batch_sums
        weights += batch_weights
        for task, values in to_natural_units(outputs).items():
            chunks[task].append(values.cpu().numpy().astype(np.float64))
    predictions = {t: np.concatenate(c) if c else np.zeros(0) for t, c in chunks.items()}
    return Evaluation(predictions, _task_means(tasks, sums, weights))


def save_model(
    directory: str | Path,
    model: QualityModel | QualityEnsemble,
    model_config: ModelConfig,
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
    config: ModelConfig
    normalizer: FeatureNormalizer


def load_model(directory: str | Path, device: str = "cpu") -> LoadedModel:
    """Rebuild what ``save_model`` wrote; the model is in eval mode on ``device``."""
    directory = Path(directory)
    config = ModelConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    normalizer = FeatureNormalizer.from_dict(json.loads((directory / NORMALIZER_FILE).read_text()))
    model = build_model(config)
    model.load_state_dict(safetensors.torch.load_file(directory / MODEL_FILE, device="cpu"))
    return LoadedModel(model.to(device).eval(), config, normalizer)


# --------------------------------------------------------------------------- synthetic data


def make_synthetic(
    n: int,
    seed: int = 0,
    dense_dims: Mapping[str, int] | None = None,
    cat_cardinalities: Mapping[str, int] | None = None,
) -> QualityDataset:
    """A learnable stand-in for the training set: labels are drawn from two latent scores
    (popularity, skippiness) that depend linearly on every feature group, plus a product of the
    first two dense groups (a pairwise interaction), with Poisson/binomial label noise."""
    dense_dims = dict(dense_dims or {"image_emb": 32, "text_emb": 32, "creator": 8})
    cat_cardinalities = dict(
        cat_cardinalities or {"language": 12, "duration_bucket": 8, "hour": 24, "weekday": 7}
    )
    rng = np.random.default_rng(seed)
    features: dict[str, np.ndarray] = {}
    latent = np.zeros((n, 2))
    for name, dim in dense_dims.items():
        x = rng.standard_normal((n, dim))
        features[name] = x.astype(np.float32)
        latent += x @ rng.standard_normal((dim, 2)) / np.sqrt(dim)
    if len(dense_dims) >= 2:
        a, b = (features[k][:, 0] for k in list(dense_dims)[:2])
        latent[:, 0] += 0.5 * a * b
    for name, card in cat_cardinalities.items():
        idx = rng.integers(0, card, n)
        features[name] = idx
        latent += 0.5 * rng.standard_normal((card, 2))[idx]
    latent /= latent.std(axis=0) + 1e-9
    popularity, skippiness = latent[:, 0], latent[:, 1]
    plays = rng.poisson(np.exp(3.0 + 0.8 * popularity))
    skips = rng.binomial(plays, 1 / (1 + np.exp(0.3 - 1.2 * skippiness)))
    full = rng.binomial(plays - skips, 1 / (1 + np.exp(0.5 + 0.8 * skippiness)))
    # Length is known at creation (duration_bucket); watch time scales with it.
    bucket_card = cat_cardinalities.get("duration_bucket")
    position = (
        rng.random(n)
        if bucket_card is None
        else (features["duration_bucket"] + rng.random(n)) / bucket_card
    )
    duration = 5.0 + 50.0 * position
    has_plays = plays > 0
    avg_watch = duration / (1 + np.exp(skippiness)) * rng.lognormal(0, 0.2, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        skip_rate = np.where(has_plays, skips / plays, np.nan)
    for name in dense_dims:  # a few missing values, as for a creator without history
        features[name][rng.random(n) < 0.02, 0] = np.nan
    return QualityDataset(
        features=features,
        targets={
            "skips": skips.astype(np.float64),
            "avg_watch_time_s": np.where(has_plays, avg_watch, np.nan),
            "full_watches": full.astype(np.float64),
            "skip_rate": skip_rate,
        },
        plays=plays.astype(np.float64),
    )


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vq-train", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="dataset .npz written by QualityDataset.save_npz")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic rows")
    p.add_argument("--out", type=Path, required=True, help="directory for the saved model")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="last fraction of the (time-ordered) rows held out for validation",
    )
    p.add_argument("--epochs", type=int, default=TrainConfig.max_epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="global")
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    p.add_argument("--patience", type=int, default=TrainConfig.patience)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--device", default=TrainConfig.device)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--checkpoint-dir")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--whiten", default="", help="comma-separated dense groups to whiten")
    p.add_argument("--width", type=int, default=ModelConfig.width)
    p.add_argument("--cross-layers", type=int, default=ModelConfig.cross_layers)
    p.add_argument("--cross-rank", type=int, default=ModelConfig.cross_rank)
    p.add_argument("--mlp", default="256,128", help="comma-separated hidden sizes")
    p.add_argument("--dropout", type=float, default=ModelConfig.dropout)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Train on an .npz (or synthetic) dataset and save the model to ``--out``.

    Under torchrun (``WORLD_SIZE`` > 1) it initialises the process group itself: NCCL when the
    device is CUDA, gloo otherwise. Only rank 0 writes ``--out``.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_cfg = TrainConfig(
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        checkpoint_dir=args.checkpoint_dir,
        num_workers=args.num_workers,
        whiten=tuple(g for g in args.whiten.split(",") if g),
    )
    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if _resolve_device(args.device, _Dist(0, 1, 0)).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        started_group = True
    try:
        data = (
            make_synthetic(args.synthetic, seed=args.seed)
            if args.synthetic is not None
            else QualityDataset.load_npz(args.data)
        )
        dense_dims, cat_cardinalities = infer_groups(data)
        model_config = ModelConfig(
            dense_dims=dense_dims,
            cat_cardinalities=cat_cardinalities,
            width=args.width,
            cross_layers=args.cross_layers,
            cross_rank=args.cross_rank,
            mlp=tuple(int(s) for s in args.mlp.split(",") if s),
            dropout=args.dropout,
        )
        n_val = max(1, int(round(len(data) * args.val_fraction)))
        split = len(data) - n_val
        result = fit(
            model_config, train_cfg, data.subset(slice(0, split)), data.subset(slice(split, None))
        )
        if _dist_context().rank == 0:
            save_model(args.out, result.model, model_config, result.normalizer)
            (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
            logger.info(
                "saved model (best epoch %d, val_loss %.4f) to %s",
                result.best_epoch,
                result.best_val_loss,
                args.out,
            )
    finally:
        if started_group:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
