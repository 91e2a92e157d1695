"""Pipeline-parallel BLIP image tower: an encoder too big for one device, cut into stages.

The image tower of `BlipEncoder` (BLIP's vision transformer, its post-layernorm, the class token
and `vision_proj` into the retrieval space) is split by layers over the ranks of a process group:
stage 0 holds the patch/position embeddings and the first layers, the last stage the remaining
layers, the post-layernorm and the projection, the stages in between a share of the layers each.
Each rank builds its stage on the meta device and reads only its own tensors from the
checkpoint's safetensors files, so no process ever holds the whole tower. Batches run through
`torch.distributed.pipelining`'s GPipe schedule (`ScheduleGPipe`): a round of M micro-batches
fills the pipeline, stage s works on micro-batch i while stage s+1 works on i-1, and the
last rank returns the outputs. The idle share per round (the bubble) is (S-1)/(M+S-1) for S
stages.

What the last rank returns is `vision_proj(post_layernorm(h)[:, 0])` per image, the projection
**before** L2 normalisation; `l2_normalise` of it is exactly the per-frame vector that
`BlipEncoder.encode_images` L2-normalises, mean-pools and normalises again.

Run it under torchrun (gloo on CPU, NCCL on CUDA, one stage per rank)::

    torchrun --standalone --nproc_per_node=2 -m vq_assets.core.embeddings.pipelined \\
        --model PATH --images 64 --microbatches 4 --out emb.npy [--pixels pixels.npy]

When the tower fits one device, data parallelism (replicate it, split the videos) is the better
choice: no bubble and no activations sent between devices.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from vq_assets.core.embeddings.base import DTYPES

log = logging.getLogger(__name__)

VISION_PREFIX = "vision_model."
PROJ_PREFIX = "vision_proj."


class BlipVisionStage(nn.Module):
    """One pipeline stage of BLIP's image tower: layers `[first_layer, first_layer + n)` of the
    vision encoder, plus the embeddings on the first stage and post-layernorm → class token →
    `vision_proj` on the last."""

    def __init__(
        self,
        layers: Sequence[nn.Module],
        first_layer: int,
        *,
        embeddings: nn.Module | None = None,
        post_layernorm: nn.Module | None = None,
        proj: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (post_layernorm is None) != (proj is None):
            raise ValueError("the last stage needs both post_layernorm and proj")
        self.first_layer = first_layer
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self.post_layernorm = post_layernorm
        self.proj = proj

    @property
    def is_first(self) -> bool:
        return self.embeddings is not None

    @property
    def is_last(self) -> bool:
        return self.proj is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embeddings is not None:
            x = self.embeddings(x)  # pixel_values [B, 3, S, S] → tokens [B, T, D]
        for layer in self.layers:
            x = layer(x)
        if self.proj is not None:
            # as BlipVisionModel: layer-norm every token, then take the class token
            x = self.proj(self.post_layernorm(x)[:, 0, :])
        return x

    def checkpoint_key(self, name: str) -> str:
        """This stage's state-dict name → the `BlipForImageTextRetrieval` checkpoint key."""
        head, _, rest = name.partition(".")
        if head == "embeddings":
            return f"{VISION_PREFIX}embeddings.{rest}"
        if head == "layers":
            index, _, tail = rest.partition(".")
            return f"{VISION_PREFIX}encoder.layers.{self.first_layer + int(index)}.{tail}"
        if head == "post_layernorm":
            return f"{VISION_PREFIX}post_layernorm.{rest}"
        if head == "proj":
            return f"{PROJ_PREFIX}{rest}"
        raise KeyError(name)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def layer_bounds(num_layers: int, num_stages: int) -> list[int]:
    """Stage s holds layers [bounds[s], bounds[s+1]): as even as possible, earlier stages take
    the remainder (the last stage also carries the head, the first the embeddings)."""
    if not 1 <= num_stages <= num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {num_stages} stages")
    base, extra = divmod(num_layers, num_stages)
    bounds = [0]
    for s in range(num_stages):
        bounds.append(bounds[-1] + base + (1 if s < extra else 0))
    return bounds


def _load_config(model: str | os.PathLike[str]):
    from transformers import BlipConfig

    config = BlipConfig.from_pretrained(os.fspath(model))
    archs = config.architectures or []
    if "BlipForImageTextRetrieval" not in archs:
        raise ValueError(f"{model} is {archs}, not a BlipForImageTextRetrieval checkpoint")
    return config


def build_stage(
    config, stage: int, num_stages: int, *, device: str | torch.device = "meta"
) -> BlipVisionStage:
    """Stage `stage` of `num_stages`, its modules created on `device` (default: meta, i.e. no
    memory; `load_stage` then materialises only this stage's tensors)."""
    from transformers.models.blip.modeling_blip import BlipVisionModel

    vcfg = config.vision_config
    bounds = layer_bounds(vcfg.num_hidden_layers, num_stages)
    with torch.device(device):
        # The whole tower on `device` (free on meta), then only this stage's modules are kept.
        tower = BlipVisionModel(vcfg)
        last = stage == num_stages - 1
        proj = nn.Linear(vcfg.hidden_size, config.image_text_hidden_size) if last else None
    lo, hi = bounds[stage], bounds[stage + 1]
    return BlipVisionStage(
        list(tower.encoder.layers[lo:hi]),
        lo,
        embeddings=tower.embeddings if stage == 0 else None,
        post_layernorm=tower.post_layernorm if last else None,
        proj=proj,
    )


def _safetensors_files(path: Path) -> dict[str, Path] | None:
    """checkpoint key → safetensors file, or None when the checkpoint has none."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: path / f for k, f in weight_map.items()}
    single = path / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(os.fspath(single), "pt") as f:
            return {k: single for k in f.keys()}
    return None


def load_stage(
    model: str | os.PathLike[str],
    stage: int,
    num_stages: int,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "fp32",
) -> BlipVisionStage:
    """Stage `stage` of the checkpoint's image tower with its weights, on `device`, in eval mode.

    With safetensors weights (one file or shards) only this stage's tensors are read. A
    checkpoint without them (a `.bin` file, a hub id) is loaded whole once and cut, which needs
    the memory for the whole model on this rank's host.
    """
    config = _load_config(model)
    module = build_stage(config, stage, num_stages, device="meta")
    files = _safetensors_files(Path(model)) if Path(model).is_dir() else None
    names = list(module.state_dict())
    if files is not None:
        from safetensors import safe_open

        wanted: dict[Path, list[tuple[str, str]]] = {}
        for name in names:
            key = module.checkpoint_key(name)
            if key not in files:
                raise KeyError(f"{model} has no tensor {key} (stage {stage} needs it)")
            wanted.setdefault(files[key], []).append((name, key))
        state = {}
        for file, pairs in wanted.items():
            with safe_open(os.fspath(file), "pt") as f:
                state |= {name: f.get_tensor(key) for name, key in pairs}
    else:
        from transformers import BlipForImageTextRetrieval

        log.warning("%s has no safetensors weights: loading the whole model to cut stage", model)
        full = BlipForImageTextRetrieval.from_pretrained(os.fspath(model)).state_dict()
        state = {name: full[module.checkpoint_key(name)] for name in names}
        del full
    module.load_state_dict(state, strict=True, assign=True)
    return module.to(device=device, dtype=DTYPES[dtype]).eval()


def pipelined_image_features(
    module: BlipVisionStage,
    pixel_values: torch.Tensor | None,
    *,
    microbatches: int,
    microbatch_size: int,
    device: torch.device,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor | None:
    """Run `pixel_values` [N, 3, S, S] through the pipeline, one stage per rank of `group`.

    Rank 0 (the first stage) passes the pixels; the other ranks pass None. Images go in rounds
    of `microbatches * microbatch_size` (GPipe splits a round into equal micro-batches; the last
    round is padded by repeating its last image, the padding dropped again). Returns the
    float32 projections [N, image_dim], before L2 normalisation, on the last rank; None
    elsewhere.
    """
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if microbatches < 1 or microbatch_size < 1:
        raise ValueError("microbatches and microbatch_size must be positive")
    if rank == 0:
        if pixel_values is None:
            raise ValueError("the first stage needs the pixel values")
        n_images = torch.tensor([len(pixel_values)], dtype=torch.long, device=device)
    else:
        n_images = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(n_images, src=dist.get_global_rank(group, 0) if group else 0, group=group)
    n = int(n_images.item())
    stage = PipelineStage(module, rank, world, device, group=group)
    schedule = ScheduleGPipe(stage, n_microbatches=microbatches)
    per_round = microbatches * microbatch_size
    outs: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, n, per_round):
            real = min(per_round, n - start)
            if rank == 0:
                x = pixel_values[start : start + per_round].to(device)
                if real < per_round:
                    x = torch.cat([x, x[-1:].expand(per_round - real, *x.shape[1:])])
                out = schedule.eval(x)
            else:
                out = schedule.eval()
            if rank == world - 1:
                outs.append(out[:real].float())
    if rank != world - 1:
        return None
    if not outs:
        return torch.zeros((0, module.proj.out_features), dtype=torch.float32, device=device)
    return torch.cat(outs)


def single_process_image_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The same quantity in one process, from a loaded `BlipForImageTextRetrieval`: what
    `BlipEncoder.encode_images` computes per frame before `l2_normalise`."""
    cls = model.vision_model(pixel_values=pixel_values).last_hidden_state[:, 0, :]
    return model.vision_proj(cls).float()


def synthetic_pixels(model: str | os.PathLike[str], n: int, seed: int = 0) -> torch.Tensor:
    """n random uint8 frames at the checkpoint's image size, normalised as `BlipEncoder` does
    (rescale, then the image processor's mean/std): float32 [n, 3, S, S]."""
    from transformers import AutoImageProcessor

    ip = AutoImageProcessor.from_pretrained(os.fspath(model))
    size = int(ip.size["height"])
    frames = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = x * (float(ip.rescale_factor) if ip.do_rescale else 1.0)
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    return (x - mean) / std


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m vq_assets.core.embeddings.pipelined",
        description="BLIP image embeddings through a GPipe pipeline, one stage per rank "
        "(run under torchrun).",
    )
    p.add_argument("--model", type=Path, required=True, help="local BLIP retrieval checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=int, help="this many synthetic frames (seeded)")
    src.add_argument("--pixels", type=Path, help=".npy of preprocessed pixel_values [N,3,S,S]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--microbatches", type=int, default=4)
    p.add_argument("--microbatch-size", type=int, default=0, help="0: the whole batch in 1 round")
    p.add_argument("--device", default="auto", help="auto: cuda:LOCAL_RANK when present, else cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--normalise", action="store_true", help="L2-normalise the saved vectors")
    p.add_argument("--out", type=Path, required=True, help=".npy written by the last rank")
    p.add_argument("--stats", type=Path, help="JSON: per-stage layers, parameters, timing")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point under torchrun: one stage per rank; the last rank writes `--out` (and
    `--stats`). NCCL when the device is CUDA, gloo otherwise. With one process it runs the
    single-stage "pipeline" (the whole tower on one device)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend)
        else:  # plain `python -m`: a group of one
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        started = True
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        t0 = time.perf_counter()
        module = load_stage(args.model, rank, world, device=device, dtype=args.dtype)
        load_s = time.perf_counter() - t0
        pixels = None
        if rank == 0:
            if args.pixels is not None:
                pixels = torch.from_numpy(np.load(args.pixels))
            else:
                pixels = synthetic_pixels(args.model, args.images, args.seed)
            pixels = pixels.to(DTYPES[args.dtype])
        n = len(pixels) if pixels is not None else 0
        mb = args.microbatch_size or -(-max(n, 1) // args.microbatches)
        if world > 1:  # every rank needs the micro-batch size: rank 0 knows N
            box = torch.tensor([mb], dtype=torch.long, device=device)
            dist.broadcast(box, src=0)
            mb = int(box.item())
        t0 = time.perf_counter()
        out = pipelined_image_features(
            module, pixels, microbatches=args.microbatches, microbatch_size=mb, device=device
        )
        run_s = time.perf_counter() - t0
        mine = {
            "rank": rank,
            "layers": [module.first_layer, module.first_layer + len(module.layers)],
            "embeddings": module.is_first,
            "head": module.is_last,
            "parameters": module.num_parameters(),
            "load_s": round(load_s, 3),
            "run_s": round(run_s, 3),
        }
        stages: list[dict] = [{}] * world
        dist.all_gather_object(stages, mine)
        if out is not None:
            if args.normalise:
                out = torch.nn.functional.normalize(out, dim=-1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            np.save(args.out, out.cpu().numpy())
            if args.stats is not None:
                config = _load_config(args.model)
                whole = build_stage(config, 0, 1, device="meta").num_parameters()
                stats = {
                    "world_size": world,
                    "microbatches": args.microbatches,
                    "microbatch_size": mb,
                    "images": len(out),
                    "bubble_fraction": (world - 1) / (args.microbatches + world - 1),
                    "tower_parameters": whole,
                    "stages": stages,
                }
                args.stats.write_text(json.dumps(stats, indent=1))
            log.info("rank %d wrote %s %s to %s", rank, tuple(out.shape), out.dtype, args.out)
    finally:
        if started:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
