"""Ranks, devices and the global-batch sampler: what data-parallel training under torchrun
needs (gloo on CPU, NCCL on GPU), and the identity when there is one process."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from vq_assets.core.model.settings import Precision


class Dist(NamedTuple):
    rank: int
    world_size: int
    local_rank: int


def dist_context() -> Dist:
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return Dist(dist.get_rank(), dist.get_world_size(), local)
    return Dist(0, 1, 0)


def all_reduce_sum(t: torch.Tensor, ctx: Dist) -> torch.Tensor:
    if ctx.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(ctx: Dist) -> None:
    if ctx.world_size > 1:
        dist.barrier()


def resolve_device(name: str, ctx: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
    return device


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Dropout draws from the global RNG; reseeding it from (seed, epoch, rank) at every epoch makes
    # a resumed run draw the same masks as an uninterrupted one without saving per-rank RNG state.
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


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
