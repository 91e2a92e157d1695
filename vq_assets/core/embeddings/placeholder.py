"""Placeholder checkpoints: small randomly initialised `transformers` models built locally.

Weights cannot be downloaded on these machines, so every encoder that loads with
`from_pretrained` can instead load a checkpoint built here from a config (same classes, tiny
sizes, seeded random weights) and saved with `save_pretrained`. A marker file in the directory
makes every encoder that loads it report `placeholder=True` and say so loudly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import string
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from vq_assets.core.embeddings.base import checkpoint_fingerprint

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(".vq/models")
PLACEHOLDER_MARKER = "vq_placeholder.json"
# Init std of placeholder towers: transformers' defaults (1e-10 for some class tokens, 0.02 for
# BERT-style layers) map every input to nearly the same vector; a wider init keeps a random
# tower input-sensitive, so placeholder embeddings at least tell videos apart.
PLACEHOLDER_INIT_STD = 0.2


def tiny_wordpiece_vocab() -> list[str]:
    """A tiny WordPiece vocabulary: BERT's specials, BLIP's [DEC], printable ASCII characters
    and their `##` continuations. Any ASCII text tokenises into characters, so different
    captions give different token sequences; other scripts map to [UNK]."""
    chars = string.ascii_lowercase + string.digits
    return [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[DEC]",
        *chars,
        *string.punctuation,
        *(f"##{c}" for c in chars),
    ]


def placeholder_spec(path: str | os.PathLike[str]) -> dict | None:
    """The marker's content when `path` is a placeholder checkpoint, else None."""
    marker = Path(path) / PLACEHOLDER_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def checkpoint_version(source: str, config: object) -> tuple[bool, str]:
    """(is_placeholder, version) of a loaded checkpoint: a placeholder's seed and fingerprint,
    else the hub commit it was loaded at, else the local directory's fingerprint."""
    spec = placeholder_spec(source)
    if spec is not None:
        return True, f"placeholder-seed{spec['seed']}-{checkpoint_fingerprint(Path(source))}"
    commit = getattr(config, "_commit_hash", None)
    return False, commit[:12] if commit else checkpoint_fingerprint(Path(source))


def ensure_placeholder(
    dir: str | os.PathLike[str],
    spec: Mapping[str, object],
    build: Callable[[Path], None],
    what: str,
    warning: str,
) -> Path:
    """Build (once) the placeholder checkpoint `spec` describes into `dir`.

    `build(tmp)` saves the model and its pre-processors into `tmp` with `save_pretrained`; it
    runs with torch's RNG seeded from `spec["seed"]` (the caller's RNG is left untouched), so a
    seed always gives the same weights. The marker (saying the weights are NOT a trained `what`)
    is written last and the directory renamed into place, so concurrent callers never see half
    a checkpoint. An existing placeholder built from another spec is an error, not silently
    reused. `warning` is logged on every call.
    """
    path = Path(dir)
    found = placeholder_spec(path)
    if found is not None:
        if {k: found.get(k) for k in spec} != dict(spec):
            raise ValueError(f"{path} holds placeholder {found}, asked for {dict(spec)}")
        log.warning(warning)
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec["seed"]))
            build(tmp)
        (tmp / PLACEHOLDER_MARKER).write_text(
            json.dumps(dict(spec) | {"note": f"random weights, NOT a trained {what}"}, indent=1)
        )
        try:
            tmp.rename(path)
        except OSError:
            if placeholder_spec(path) is None:  # lost no race: the target is something else
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning(warning)
    return path
