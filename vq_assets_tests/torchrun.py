"""Running a module under torchrun on CPU ranks (gloo), from a test."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def torchrun(module: str, args: list[str], *, ranks: int = 2, timeout: float = 180) -> None:
    """`torchrun --standalone --nproc_per_node=ranks -m module args`; fails with its stderr."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            "-m",
            module,
            *args,
        ],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
