"""GPipe micro-batches vs the bubble: the pipelined BLIP image tower (figures only, never asserted)

Runs `vq_assets.core.embeddings.pipelined` under torchrun with S stages (one per process) for
each micro-batch count M on the same images, plus the one-process tower, and prints images/s,
each stage's parameter share and the ideal bubble fraction (S-1)/(M+S-1). On CPU the ranks share
the cores, so the figures show the mechanics (the padding, the per-stage weights), not a speed-up:
pipelining pays when the tower does not fit one device, and then it is compared with nothing.

    python bench/pipeline_parallel.py                           # tiny placeholder, 2 gloo ranks
    python bench/pipeline_parallel.py --size base --images 64 --microbatches 1 4 16
    python bench/pipeline_parallel.py --model /models/blip-itm-large-coco --device cuda \\
        --dtype bf16 --stages 2 --images 512 --microbatches 4 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout, uninstalled

from vq_assets.core.embeddings.blip import ensure_placeholder_blip  # noqa: E402


def run(model: Path, stages: int, m: int, args: argparse.Namespace, tmp: Path) -> dict:
    out, stats = tmp / f"s{stages}-m{m}.npy", tmp / f"s{stages}-m{m}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={stages}", "-m", "vq_assets.core.embeddings.pipelined"]
    cmd += ["--model", str(model), "--images", str(args.images), "--microbatches", str(m)]
    cmd += ["--device", args.device, "--dtype", args.dtype, "--out", str(out)]
    cmd += ["--stats", str(stats)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // stages)))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(stats.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="BLIP retrieval checkpoint (default: placeholder)")
    p.add_argument("--size", choices=["tiny", "base"], default="tiny")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--microbatches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vq-pp-") as d:
        tmp = Path(d)
        model = args.model or ensure_placeholder_blip(tmp / "blip", size=args.size)
        base = run(model, 1, 1, args, tmp)["stages"][0]
        print(
            f"1 process, whole tower ({base['parameters']:,} parameters): "
            f"{args.images / base['run_s']:.1f} images/s"
        )
        for m in args.microbatches:
            s = run(model, args.stages, m, args, tmp)
            run_s = max(st["run_s"] for st in s["stages"])
            shares = " + ".join(f"{st['parameters']:,}" for st in s["stages"])
            print(
                f"S={args.stages} M={m:>3} (micro-batch {s['microbatch_size']}): "
                f"{args.images / run_s:8.1f} images/s, bubble {s['bubble_fraction']:.2f}, "
                f"stage parameters {shares} = {s['tower_parameters']:,}"
            )


if __name__ == "__main__":
    main()
