"""The training loop: ``fit`` one network with AdamW and early stopping, ``fit_ensemble`` for
several seeds; seeded, resumable from checkpoints, data-parallel under torchrun."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vq_assets.core.model import tasks as tasks_
from vq_assets.core.model.checkpoint import (
    CHECKPOINT_FILE,
    FitState,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from vq_assets.core.model.dataset import Batch, QualityDataset, TensorRows, batch_as_is
from vq_assets.core.model.distributed import (
    Dist,
    GlobalBatchSampler,
    all_reduce_sum,
    autocast,
    barrier,
    dist_context,
    epoch_seed,
    resolve_device,
)
from vq_assets.core.model.network import (
    NetworkConfig,
    QualityEnsemble,
    QualityModel,
    loss_terms,
)
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.settings import Precision, TrainSettings

logger = logging.getLogger(__name__)

# Metrics beyond the losses, on the validation rows after each epoch (rank 0): the network as
# it is after the epoch, the normaliser, the validation rows -> ``{name: value}``.
EpochMetrics = Callable[[QualityModel, FeatureNormalizer, QualityDataset], dict[str, float]]


@dataclass
class FitResult:
    """The trained model (best validation epoch, eval mode) and how it got there.

    ``history`` holds one record per epoch, the same dicts that ``on_epoch`` receives;
    ``left_out`` the catalogue tasks the model has no head for, with the reason.
    """

    model: QualityModel | QualityEnsemble
    normalizer: FeatureNormalizer
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    best_val_task_losses: dict[str, float]
    stopped_early: bool
    left_out: dict[str, str] = field(default_factory=dict)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    features, targets, plays = batch
    nb = device.type == "cuda"
    return (
        {k: v.to(device, non_blocking=nb) for k, v in features.items()},
        {k: v.to(device, non_blocking=nb) for k, v in targets.items()},
        plays.to(device, non_blocking=nb),
    )


def loader(
    rows: TensorRows, sampler: GlobalBatchSampler, num_workers: int, device: torch.device
) -> DataLoader:
    return DataLoader(
        rows,
        batch_sampler=sampler,
        collate_fn=batch_as_is,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


def _train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: NetworkConfig,
    device: torch.device,
    precision: Precision,
    ctx: Dist,
) -> tuple[dict[str, float], int]:
    """One pass over the training rows; returns per-task train losses and the global row count."""
    tasks = config.tasks
    model.train()
    sums = torch.zeros(len(tasks), device=device)
    weights = torch.zeros(len(tasks), device=device)
    rows = torch.zeros(1, device=device)
    for batch in loader:
        features, targets, plays = _to_device(batch, device)
        with autocast(device, precision):
            outputs = model(features)
        local_sum, local_weight = stacked_loss_terms(outputs, targets, plays, config)
        global_weight = all_reduce_sum(local_weight.clone(), ctx)
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
    sums, weights, rows = (all_reduce_sum(t, ctx) for t in (sums, weights, rows))
    return task_means(tasks, sums, weights), int(rows.item())


def stacked_loss_terms(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    plays: torch.Tensor,
    config: NetworkConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_terms`` as two ``[T]`` vectors (sums, weights) in ``config.tasks`` order."""
    terms = loss_terms(
        outputs, targets, plays, config.shape.watch_time_prior_plays, config.loss_scale
    )
    tasks = config.tasks
    return torch.stack([terms[t][0] for t in tasks]), torch.stack([terms[t][1] for t in tasks])


def task_means(tasks: Sequence[str], sums: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    return {
        t: float(s / w) if w > 0 else float("nan")
        for t, s, w in zip(tasks, sums.tolist(), weights.tolist(), strict=True)
    }


@torch.no_grad()
def forward(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision
) -> Iterator[tuple[dict[str, torch.Tensor], Batch]]:
    model.eval()
    for batch in loader:
        batch = _to_device(batch, device)
        with autocast(device, precision):
            outputs = model(batch[0])
        yield {k: v.float() for k, v in outputs.items()}, batch


def _eval_losses(
    model: torch.nn.Module,
    loader: DataLoader,
    config: NetworkConfig,
    device: torch.device,
    precision: Precision,
    ctx: Dist,
) -> dict[str, float]:
    tasks = config.tasks
    sums = torch.zeros(len(tasks), device=device)
    weights = torch.zeros(len(tasks), device=device)
    for outputs, (_, targets, plays) in forward(model, loader, device, precision):
        batch_sums, batch_weights = stacked_loss_terms(outputs, targets, plays, config)
        sums += batch_sums
        weights += batch_weights
    return task_means(tasks, all_reduce_sum(sums, ctx), all_reduce_sum(weights, ctx))


def _head_bias(dataset: QualityDataset, tasks: Sequence[str]) -> dict[str, float]:
    """Base rates on the training rows (each task's ``Kind.base``)."""
    bias = {}
    plays = np.asarray(dataset.plays, dtype=np.float64)
    for task in tasks:
        y = np.asarray(dataset.targets[task], dtype=np.float64)
        ok = np.isfinite(y)  # fit() has checked that every task has labels
        bias[task] = tasks_.task(task).behaviour.base(y[ok], plays[ok])
    return bias


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only; biases and LayerNorm gains are not decayed (standard AdamW practice).
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class _Training(NamedTuple):
    """What one network's training run holds between epochs."""

    model: QualityModel
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: FitState
    checkpoint: Path | None
    fingerprint: str


def _rows(
    config: NetworkConfig, cfg: TrainSettings, train: QualityDataset, val: QualityDataset
) -> tuple[FeatureNormalizer, TensorRows, TensorRows]:
    """The normaliser (fitted on the train rows) and both splits as tensors."""
    normalizer = FeatureNormalizer.fit(
        train.features,
        list(config.dense_dims),
        whiten=[g for g in cfg.whiten if g in config.dense_dims],
    )
    train_rows = TensorRows(train, normalizer, config, with_labels=True)
    val_rows = TensorRows(val, normalizer, config, with_labels=True)
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        # A task without a single label has an undefined loss, and early stopping would never
        # see a finite validation loss; say so up front.
        unlabelled = [t for t, y in rows.targets.items() if not (~torch.isnan(y)).any()]
        if unlabelled:
            raise ValueError(f"{split} rows have no labels for tasks {unlabelled}")
    return normalizer, train_rows, val_rows


def _start(
    config: NetworkConfig,
    cfg: TrainSettings,
    train: QualityDataset,
    normalizer: FeatureNormalizer,
    device: torch.device,
    ctx: Dist,
) -> _Training:
    """A fresh seeded network and optimiser, or the state of the checkpoint when one exists."""
    model = QualityModel(config)
    model.init_head_bias(_head_bias(train, config.tasks))
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16")
    print_ = fingerprint(config, cfg, normalizer)
    ckpt = Path(cfg.checkpoint_dir) / CHECKPOINT_FILE if cfg.checkpoint_dir else None
    state = FitState()
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer, scaler, print_)
        logger.info("resuming from %s after epoch %d", ckpt, state.epoch)
    ddp_model: torch.nn.Module = model
    if ctx.world_size > 1:
        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return _Training(model, ddp_model, optimizer, scaler, state, ckpt, print_)


def _record(
    epoch: int, train: dict[str, float], val: dict[str, float], samples_per_s: float
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": sum(train.values()),
        "val_loss": sum(val.values()),
        **{f"train_loss_{t}": v for t, v in train.items()},
        **{f"val_loss_{t}": v for t, v in val.items()},
        "samples_per_s": samples_per_s,
    }


def _keep_best(t: _Training, record: dict[str, float], patience: int) -> None:
    """Early stopping: remember the best epoch's weights; stop after `patience` worse ones."""
    state = t.state
    state.history.append(record)
    if record["val_loss"] < state.best_val_loss:  # NaN never counts as an improvement
        state.best_val_loss, state.best_epoch, state.bad_epochs = (
            record["val_loss"],
            int(record["epoch"]),
            0,
        )
        state.best_state = {k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()}
    else:
        state.bad_epochs += 1
    state.epoch = int(record["epoch"])
    state.stopped = state.bad_epochs >= patience


def _loaders(
    train_rows: TensorRows, val_rows: TensorRows, cfg: TrainSettings, ctx: Dist, device
) -> tuple[GlobalBatchSampler, DataLoader, DataLoader]:
    """This rank's loaders; the train sampler reshuffles per epoch (``set_epoch``)."""
    samplers = [
        GlobalBatchSampler(
            len(rows),
            cfg.batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle=shuffle,
            seed=cfg.seed,
        )
        for rows, shuffle in ((train_rows, True), (val_rows, False))
    ]
    train_loader, val_loader = (
        loader(rows, s, cfg.num_workers, device)
        for rows, s in zip((train_rows, val_rows), samplers, strict=True)
    )
    return samplers[0], train_loader, val_loader


def fit(
    model_config: NetworkConfig,
    train_cfg: TrainSettings,
    train: QualityDataset,
    val: QualityDataset,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    epoch_metrics: EpochMetrics | None = None,
) -> FitResult:
    """Train one ``QualityModel`` with AdamW and early stopping on the validation loss.

    Seeded and deterministic on CPU; the caller's torch RNG state is left untouched. Under an
    initialised ``torch.distributed`` process group the model is wrapped in DDP, each rank takes
    its share of every global batch, and ``on_epoch``/logging happen on rank 0 only.

    ``on_epoch`` receives ``{"epoch", "train_loss", "val_loss", "train_loss_<task>",
    "val_loss_<task>", "samples_per_s", "epoch_time_s"}`` after every epoch, plus what
    ``epoch_metrics`` returns (it draws nothing from the RNG the next epoch trains with: every
    epoch reseeds).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"need train and validation rows, got {len(train)} and {len(val)}")
    if model_config.shape.members > 1:
        raise ValueError("fit trains one network; use fit_ensemble for members > 1")
    ctx = dist_context()
    device = resolve_device(train_cfg.device, ctx)
    if train_cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs CUDA; use bf16 on CPU")
    normalizer, train_rows, val_rows = _rows(model_config, train_cfg, train, val)
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        torch.manual_seed(train_cfg.seed)
        t = _start(model_config, train_cfg, train, normalizer, device, ctx)
        sampler, train_loader, val_loader = _loaders(train_rows, val_rows, train_cfg, ctx, device)
        while t.state.epoch < train_cfg.max_epochs and not t.state.stopped:
            epoch = t.state.epoch + 1
            sampler.set_epoch(epoch)
            torch.manual_seed(epoch_seed(train_cfg.seed, epoch, ctx.rank))
            start = time.perf_counter()
            train_losses, rows = _train_epoch(
                t.ddp_model,
                train_loader,
                t.optimizer,
                t.scaler,
                model_config,
                device,
                train_cfg.precision,
                ctx,
            )
            train_time = time.perf_counter() - start
            val_losses = _eval_losses(
                t.model, val_loader, model_config, device, train_cfg.precision, ctx
            )
            extra = (
                epoch_metrics(t.model, normalizer, val)
                if epoch_metrics is not None and ctx.rank == 0
                else {}
            )
            record = {
                **extra,
                **_record(epoch, train_losses, val_losses, rows / train_time),
                "epoch_time_s": time.perf_counter() - start,
            }
            _keep_best(t, record, train_cfg.patience)
            if t.checkpoint is not None:
                if ctx.rank == 0:
                    t.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                    save_checkpoint(
                        t.checkpoint, t.model, t.optimizer, t.scaler, t.state, t.fingerprint
                    )
                barrier(ctx)
            if ctx.rank == 0:
                _log_epoch(record, t.state, train_cfg.max_epochs, on_epoch)
    return _result(t, normalizer, model_config.tasks)


def _log_epoch(
    record: dict[str, float],
    state: FitState,
    max_epochs: int,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> None:
    logger.info(
        "epoch %d/%d train_loss=%.4f val_loss=%.4f (best %.4f @ %d) %.0f samples/s",
        record["epoch"],
        max_epochs,
        record["train_loss"],
        record["val_loss"],
        state.best_val_loss,
        state.best_epoch,
        record["samples_per_s"],
    )
    if on_epoch is not None:
        on_epoch(record)


def _result(t: _Training, normalizer: FeatureNormalizer, tasks: Sequence[str]) -> FitResult:
    """The best epoch's network, in eval mode."""
    state = t.state
    if not state.best_state:
        raise RuntimeError("no epoch gave a finite validation loss (diverged, or max_epochs=0)")
    t.model.load_state_dict(state.best_state)
    t.model.eval()
    best = state.history[state.best_epoch - 1]
    return FitResult(
        model=t.model,
        normalizer=normalizer,
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_loss=state.best_val_loss,
        best_val_task_losses={t_: best[f"val_loss_{t_}"] for t_ in tasks},
        stopped_early=state.stopped,
    )
