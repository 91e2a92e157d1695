"""How much of the matrix-multiply rate does training reach? (figures only, never asserted)

Builds the quality model the training asset trains by default (feature groups of
`features.py`: image and text embeddings, creator features, the four categoricals; width 128;
scored as a 5-network ensemble) and a synthetic data set with those shapes, then measures, side
by side in one run (rounds interleaved, medians reported):

  train     samples/s of `fit` for one network (train-epoch time only, as `fit` reports it),
            per batch size;
  bare      the GEMMs of one training step at that batch size (every nn.Linear, the low-rank
            cross layers, the pairwise bmm; forward + backward) as bare `F.linear` /
            `torch.bmm` calls: the rate the hardware gives exactly those shapes;
  roofline  training GFLOP/s (samples/s x GEMM FLOPs per sample) / bare GFLOP/s: the share of
            a training step spent on useful matrix work; the rest is elementwise ops,
            embedding lookups, the loss, AdamW, batch gathering and Python overhead;
  score     videos/s of `predict` at batch 8192 (feature normalisation included), split into
            normalisation and the model's forward passes, with the same ratio for the forward.

The GEMM FLOPs come from the model's layer shapes (forward 2*B*in*out per matmul, backward 2x
that, 1x for a first layer whose input needs no gradient) and are checked against torch's
FlopCounterMode on one real training step, so a model change that the list misses shows up.

    python bench/train.py                       # CPU, 1 and 2 threads, 3 rounds
    OMP_WAIT_POLICY=PASSIVE python bench/train.py   # threads sleep when idle: for busy cores
    python bench/train.py --emb-dim 64          # the tiny placeholder BLIP's embedding width
    python bench/train.py --device cuda --threads 0 --batch-sizes 1024,8192 --rows 200000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.model.dataset import QualityDataset  # noqa: E402
from vq_assets.core.model.features import CATEGORICAL, CREATOR_FEATURES  # noqa: E402
from vq_assets.core.model.inference import predict  # noqa: E402
from vq_assets.core.model.loop import FitResult, fit  # noqa: E402
from vq_assets.core.model.network import NetworkConfig, QualityModel, loss_terms  # noqa: E402
from vq_assets.core.model.settings import (  # noqa: E402
    ModelShape,
    TrainSettings,
    add_arguments,
    from_arguments,
)
from vq_assets.core.model.synthetic import make_synthetic  # noqa: E402
from vq_assets.core.model.train import fit_ensemble  # noqa: E402

# BLIP base's retrieval space is 256 wide (`image_text_hidden_size`); the tiny placeholder that
# tests and the offline demo build (`ensure_placeholder_blip(size="tiny")`) gives 64.
BLIP_BASE_DIM = 256


@dataclass(frozen=True)
class Gemm:
    """One matrix multiply of a training step: [batch x] [rows, inner] @ [inner, cols]."""

    name: str
    rows: int
    inner: int
    cols: int
    batch: int = 1  # > 1 for bmm
    bias: bool = False
    input_grad: bool = True  # False for a first layer: its input is data, not an activation

    @property
    def forward_flops(self) -> int:
        return 2 * self.batch * self.rows * self.inner * self.cols

    @property
    def train_flops(self) -> int:
        # Backward: the weight (or second operand) gradient, plus the input gradient if needed.
        return self.forward_flops * (3 if self.input_grad else 2)


def model_gemms(model: QualityModel, batch: int) -> list[Gemm]:
    """Every matmul of one step of `model` at `batch`, read from its modules' shapes: each
    nn.Linear, the low-rank cross layers (functional F.linear on V and U) and the pairwise bmm.
    FlopCounterMode checks the list against a real step (see `counted_train_flops`)."""
    # A dense group's first layer reads the data itself: no input gradient to compute.
    first = {
        next(m for m in seq.modules() if isinstance(m, nn.Linear))
        for seq in model.projection.dense.values()
    }
    gemms = [
        Gemm(
            name,
            batch,
            m.in_features,
            m.out_features,
            bias=m.bias is not None,
            input_grad=m not in first,
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    for i, v in enumerate(model.cross.V):
        rank, flat = v.shape  # V is [r, N]; U ([N, r]) maps back
        gemms += [Gemm(f"cross.V.{i}", batch, flat, rank), Gemm(f"cross.U.{i}", batch, rank, flat)]
    groups, width = len(model.config.groups), model.config.shape.width
    # The pairwise interaction: groups [B, G, W] @ groups^T [B, W, G], both operands trained.
    gemms.append(Gemm("interaction.bmm", groups, width, groups, batch=batch))
    return gemms


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, min_seconds: float = 0.5) -> float:
    """Seconds per call: one warm-up, then as many calls as fit in `min_seconds`."""
    fn()
    synchronize(device)
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return elapsed / calls


def _forward_backward(op: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> object:
    out = op()
    # autograd.grad, not .backward(): no accumulation into .grad to pay for.
    return torch.autograd.grad(out, inputs, torch.ones_like(out))


@torch.no_grad()
def _forward(op: Callable[[], torch.Tensor]) -> object:
    return op()


def bare_gemm_seconds(gemms: list[Gemm], device: torch.device, backward: bool) -> float:
    """Seconds for the GEMMs of one step as bare F.linear / bmm calls (+ their backward)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape: int, grad: bool) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device).requires_grad_(grad and backward)

    calls: list[Callable[[], object]] = []
    for m in gemms:
        if m.batch > 1:
            x = tensor(m.batch, m.rows, m.inner, grad=True)
            w = tensor(m.batch, m.inner, m.cols, grad=True)
            op, inputs = partial(torch.bmm, x, w), [x, w]
        else:
            x = tensor(m.rows, m.inner, grad=m.input_grad)
            w = tensor(m.cols, m.inner, grad=True)
            b = tensor(m.cols, grad=True) if m.bias else None
            op = partial(F.linear, x, w, b)
            inputs = [t for t in (x, w, b) if t is not None and t.requires_grad]
        calls.append(partial(_forward_backward, op, inputs) if backward else partial(_forward, op))

    def step() -> None:
        for call in calls:
            call()

    return time_it(step, device)


def counted_train_flops(model: QualityModel, data: QualityDataset, batch: int) -> int:
    """FLOPs of one real forward + loss + backward as torch's FlopCounterMode counts them."""
    features = {
        k: torch.as_tensor(v[:batch]).float() if v.ndim == 2 else torch.as_tensor(v[:batch])
        for k, v in data.features.items()
    }
    features = {k: torch.nan_to_num(v) for k, v in features.items()}
    targets = {k: torch.as_tensor(v[:batch]).float() for k, v in data.targets.items()}
    plays = torch.as_tensor(data.plays[:batch]).float()
    with FlopCounterMode(display=False) as counter:
        terms = loss_terms(model(features), targets, plays)
        sum(s / w for s, w in terms.values()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def score_breakdown(
    scorer: FitResult, data: QualityDataset, batch: int, device: torch.device
) -> tuple[float, float]:
    """Seconds of the two halves of `predict`: normalising the features (numpy, whole set) and
    the model's forward passes alone on the prepared tensors."""
    started = time.perf_counter()
    features = scorer.normalizer.transform(data.features)
    normalise_s = time.perf_counter() - started
    tensors = {g: torch.from_numpy(features[g]).to(device) for g in scorer.model.config.groups}
    synchronize(device)
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(data), batch):
            scorer.model({g: x[i : i + batch] for g, x in tensors.items()})
    synchronize(device)
    return normalise_s, time.perf_counter() - started


def train_samples_per_s(
    config: NetworkConfig,
    train: QualityDataset,
    val: QualityDataset,
    batch: int,
    epochs: int,
    device: str,
) -> float:
    """Median over epochs of `fit`'s own samples/s (the train loop, not validation)."""
    cfg = TrainSettings(batch_size=batch, max_epochs=epochs, patience=epochs + 1, device=device)
    history = fit(config, cfg, train, val).history
    # The first epoch pays one-off allocations; drop it when there are others.
    rates = [h["samples_per_s"] for h in history[1:] or history]
    return statistics.median(rates)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--emb-dim",
        type=int,
        default=BLIP_BASE_DIM,
        help="image/text embedding width (256 BLIP base, 64 the tiny placeholder)",
    )
    # The network's shape: the production defaults of core's ModelShape (--width, --members...).
    add_arguments(p, ModelShape)
    p.add_argument("--rows", type=int, default=20_000, help="synthetic rows (80%% trained on)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-sizes", default="256,1024")
    p.add_argument("--threads", default="1,2", help="torch threads to compare (0: leave as is)")
    p.add_argument("--score-rows", type=int, default=100_000)
    p.add_argument("--score-batch", type=int, default=8192)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]

    dense = {"image_emb": args.emb_dim, "text_emb": args.emb_dim, "creator": len(CREATOR_FEATURES)}
    shape = from_arguments(ModelShape, args)
    # `fit` trains one network; the ensemble is `members` such fits, scored together.
    ensemble = NetworkConfig(dense_dims=dense, cat_cardinalities=dict(CATEGORICAL), shape=shape)
    config = ensemble.single()
    data = make_synthetic(args.rows, seed=0, dense_dims=dense, cat_cardinalities=CATEGORICAL)
    split = int(0.8 * args.rows)
    train, val = data.subset(slice(0, split)), data.subset(slice(split, None))
    to_score = make_synthetic(
        args.score_rows, seed=1, dense_dims=dense, cat_cardinalities=CATEGORICAL
    )
    scorer = fit_ensemble(
        ensemble,
        TrainSettings(max_epochs=1, device=args.device),
        train,
        val,
    )

    torch.manual_seed(0)
    model = QualityModel(config)
    print(
        f"model: groups {dict(dense)} + {dict(CATEGORICAL)}, width {shape.width}, "
        f"cross {shape.cross_layers}x rank {shape.cross_rank}, mlp {shape.mlp}; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters per network; "
        f"scored as an ensemble of {shape.members}"
    )
    for b in batch_sizes:
        gemms = model_gemms(model, b)
        ours = sum(m.train_flops for m in gemms)
        counted = counted_train_flops(model, data, b)
        print(
            f"batch {b}: {len(gemms)} GEMMs, {ours / b / 1e6:.3f} MFLOP per sample per step; "
            f"FlopCounterMode counts {counted / b / 1e6:.3f} (ratio {counted / ours:.3f})"
        )
    # The OpenMP wait policy decides whether idle torch threads spin: on cores shared with
    # other jobs, spinning threads can make 2 threads far slower than 1.
    print(
        f"torch {torch.__version__}, device {device}, default threads "
        f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')!r}, "
        f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    # results[(threads, what)] -> list over rounds
    results: dict[tuple[int, str], list[float]] = {}
    for r in range(args.rounds):
        for threads in thread_counts:
            if threads:
                torch.set_num_threads(threads)
            t = torch.get_num_threads()
            for b in batch_sizes:
                gemms = model_gemms(model, b)
                results.setdefault((t, f"train{b}"), []).append(
                    train_samples_per_s(config, train, val, b, args.epochs, args.device)
                )
                results.setdefault((t, f"bare{b}"), []).append(
                    sum(m.train_flops for m in gemms) / bare_gemm_seconds(gemms, device, True)
                )
            started = time.perf_counter()
            predict(scorer.model, scorer.normalizer, to_score, batch_size=args.score_batch)
            synchronize(device)
            results.setdefault((t, "score"), []).append(
                args.score_rows / (time.perf_counter() - started)
            )
            normalise_s, forward_s = score_breakdown(scorer, to_score, args.score_batch, device)
            results.setdefault((t, "normalise_s"), []).append(normalise_s)
            results.setdefault((t, "forward"), []).append(args.score_rows / forward_s)
            gemms = model_gemms(model, args.score_batch)
            results.setdefault((t, "bare_fwd"), []).append(
                sum(m.forward_flops for m in gemms) / bare_gemm_seconds(gemms, device, False)
            )
        print(f"  round {r + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    threads_seen = sorted({t for t, _ in med})
    print(
        f"\nmedians of {args.rounds} rounds ({args.epochs} epochs of {split:,} rows per fit; "
        "samples/s of one network: an ensemble trains `members` times as long)"
    )
    print(
        f"{'threads':>7s} {'batch':>6s} {'samples/s':>10s} {'train GFLOP/s':>14s} "
        f"{'bare GFLOP/s':>13s} {'roofline':>9s}"
    )
    for t in threads_seen:
        for b in batch_sizes:
            per_sample = sum(m.train_flops for m in model_gemms(model, b)) / b
            rate = med[(t, f"train{b}")]
            achieved = rate * per_sample / 1e9
            bare = med[(t, f"bare{b}")] / 1e9
            print(
                f"{t:7d} {b:6d} {rate:10,.0f} {achieved:14.2f} {bare:13.2f} {achieved / bare:9.1%}"
            )
    print(
        f"\nscoring: predict at batch {args.score_batch} on {args.score_rows:,} videos with "
        f"the {shape.members}-network ensemble; 'model only' = its forward passes alone on "
        "already normalised tensors"
    )
    print(
        f"{'threads':>7s} {'videos/s':>10s} {'normalise s':>12s} {'model only/s':>13s} "
        f"{'fwd GFLOP/s':>12s} {'bare fwd GFLOP/s':>17s} {'roofline':>9s} {'model only':>11s}"
    )
    fwd_per_video = shape.members * sum(m.forward_flops for m in model_gemms(model, 1))
    for t in threads_seen:
        rate, model_rate = med[(t, "score")], med[(t, "forward")]
        achieved = rate * fwd_per_video / 1e9
        bare = med[(t, "bare_fwd")] / 1e9
        print(
            f"{t:7d} {rate:10,.0f} {med[(t, 'normalise_s')]:12.2f} {model_rate:13,.0f} "
            f"{achieved:12.2f} {bare:17.2f} {achieved / bare:9.1%} "
            f"{model_rate * fwd_per_video / 1e9 / bare:11.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
