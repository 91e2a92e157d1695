"""`cdml_model`: train the CDML tower on co-watch pairs, seeded and resumable (DESIGN §11).

Content-only input means every new video gets a vector at creation, before anyone watched
it. The tower, the loss and the metrics live in `cdml_tower`; they are re-exported here so that
callers import one module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from vq_assets.core.related.cdml_tower import (
    CDMLConfig,
    CDMLTower,
    embed,
    recall_at_k,
    triplet_loss_in_batch,
)
from vq_assets.core.related.checkpoint import (
    CHECKPOINT_FILE,
    CDMLFitState,
    load_checkpoint,
    save_checkpoint,
)
from vq_assets.core.related.content import ContentMatrix

__all__ = [
    "CDMLConfig",
    "CDMLResult",
    "CDMLTower",
    "cdml_vectors",
    "embed",
    "recall_at_k",
    "train_cdml",
    "triplet_loss_in_batch",
]

logger = logging.getLogger(__name__)

# (idx_a, idx_b) or (idx_a, idx_b, weight, ...): rows of the content matrix; a PairIndex fits.
Pairs = Sequence[np.ndarray]


@dataclass
class CDMLResult:
    """The trained tower (eval mode; the best validation epoch's weights when validation pairs
    were given and `restore_best`, else the last epoch's) and how it got there.

    `history` holds one record per epoch, the same dicts `on_epoch` receives.
    """

    tower: CDMLTower
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_recall: float = math.nan
    resumed_from_epoch: int = 0


def _pair_arrays(pairs: Pairs, n: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(pairs[0], np.int64)
    b = np.asarray(pairs[1], np.int64)
    w = np.asarray(pairs[2], np.float64) if len(pairs) > 2 else np.ones(len(a))
    if not (len(a) == len(b) == len(w)):
        raise ValueError(f"{name}: idx_a, idx_b and weight must have equal length")
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        raise ValueError(f"{name}: a row index is outside the content matrix (n={n})")
    return a, b, w


def _weights(raw: np.ndarray, transform: str) -> np.ndarray:
    # log1p by default: a pair co-watched by 1,000 users should not outweigh 300 pairs of 3.
    if transform == "log1p":
        return np.log1p(np.maximum(raw, 0.0))
    if transform == "linear":
        return np.maximum(raw, 0.0)
    return np.ones_like(raw)


def fingerprint(config: CDMLConfig, content: np.ndarray, pairs: Sequence[np.ndarray]) -> str:
    """What must match for a checkpoint to be resumed: the config (epochs may grow) and a digest
    of the training data, so a checkpoint never continues on other data."""
    digest = hashlib.blake2b(digest_size=16)
    for arr in (content, *pairs):
        arr = np.ascontiguousarray(arr)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(arr.tobytes())
    cfg = {k: v for k, v in config.to_dict().items() if k != "epochs"}
    return json.dumps({"config": cfg, "data": digest.hexdigest()}, sort_keys=True)


def _validation(
    tower: CDMLTower,
    content: np.ndarray,
    val_a: np.ndarray,
    val_b: np.ndarray,
    k: int,
    device: str | torch.device,
) -> float:
    """recall@k of held-out pairs, both directions, over every video of `content`."""
    vecs = embed(tower, content, device=device)
    queries, inverse = np.unique(np.concatenate([val_a, val_b]), return_inverse=True)
    targets = np.concatenate([val_b, val_a])
    return recall_at_k(vecs[queries], vecs, (inverse, targets), k, self_index=queries)


def train_cdml(
    content: np.ndarray,
    pairs: Pairs,
    val_pairs: Pairs | None = None,
    config: CDMLConfig | None = None,
    *,
    checkpoint_dir: Path | str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    restore_best: bool = True,
    device: str | torch.device = "cpu",
) -> CDMLResult:
    """Train a CDML tower on co-watch `pairs` of rows of `content` [n, in_dim].

    Seeded: the initial weights come from `config.seed`, each epoch's pair order from
    (seed, epoch), and nothing random happens otherwise, so a run resumed from
    `checkpoint_dir` (written after every epoch) ends with the weights an uninterrupted run
    ends with. `val_pairs` (held-out days, same row space) give recall@`val_k` per epoch,
    logged and passed to `on_epoch` with the epoch's mean loss.
    """
    x = np.ascontiguousarray(content, np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError("content must be a finite 2-D matrix (mask videos without content out)")
    config = config or CDMLConfig(in_dim=x.shape[1])
    if config.in_dim != x.shape[1]:
        raise ValueError(f"config.in_dim={config.in_dim} but content has {x.shape[1]} columns")
    idx_a, idx_b, raw_w = _pair_arrays(pairs, len(x), "pairs")
    val = _pair_arrays(val_pairs, len(x), "val_pairs") if val_pairs is not None else None
    weights = _weights(raw_w, config.weight_transform)

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(config.seed)
        tower = CDMLTower(config)
    tower.set_standardisation(x)
    tower.to(device)
    optimizer = torch.optim.AdamW(
        tower.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    state = CDMLFitState()
    path, fp = None, ""
    if checkpoint_dir is not None:
        path = Path(checkpoint_dir) / CHECKPOINT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(config, x, [idx_a, idx_b, raw_w, *(val[:2] if val else ())])
        if path.exists():
            state = load_checkpoint(path, tower, optimizer, fp)
            logger.info("CDML: resuming from %s after epoch %d", path, state.epoch)
    resumed_from = state.epoch

    features = torch.from_numpy(x)
    a_t, b_t = torch.from_numpy(idx_a), torch.from_numpy(idx_b)
    w_t = torch.from_numpy(weights.astype(np.float32))
    for epoch in range(state.epoch, config.epochs):
        tower.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(len(idx_a))
        total, batches = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            rows = torch.from_numpy(order[start : start + config.batch_size])
            if len(rows) < 2:  # a lone pair has no in-batch negative
                continue
            ia, ib, w = a_t[rows], b_t[rows], w_t[rows].to(device)
            za = tower(features[ia].to(device))
            zb = tower(features[ib].to(device))
            ia, ib = ia.to(device), ib.to(device)
            loss = triplet_loss_in_batch(
                za, zb, config.margin, config.negatives, anchor_ids=ia, positive_ids=ib, weight=w
            )
            if config.symmetric:
                back = triplet_loss_in_batch(
                    zb,
                    za,
                    config.margin,
                    config.negatives,
                    anchor_ids=ib,
                    positive_ids=ia,
                    weight=w,
                )
                loss = 0.5 * (loss + back)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        record: dict[str, float] = {"epoch": epoch + 1, "loss": total / max(batches, 1)}
        if val is not None and len(val[0]):
            recall = _validation(tower, x, val[0], val[1], config.val_k, device)
            record[f"val_recall_at_{config.val_k}"] = recall
            if recall > state.best_recall:
                state.best_recall, state.best_epoch = recall, epoch + 1
                state.best_state = {
                    k: v.detach().cpu().clone() for k, v in tower.state_dict().items()
                }
        state.epoch = epoch + 1
        state.history.append(record)
        logger.info("CDML epoch %d: %s", epoch + 1, record)
        if path is not None:  # saved before on_epoch: a failing callback loses no work
            save_checkpoint(path, tower, optimizer, state, fp)
        if on_epoch is not None:
            on_epoch(record)

    if restore_best and state.best_state:
        tower.load_state_dict(state.best_state)
    return CDMLResult(
        tower=tower.cpu().eval(),
        history=list(state.history),
        best_epoch=state.best_epoch,
        best_recall=state.best_recall if math.isfinite(state.best_recall) else math.nan,
        resumed_from_epoch=resumed_from,
    )


def cdml_vectors(
    tower: CDMLTower, video_ids: Sequence[str], content: ContentMatrix, **embed_kw
) -> pa.Table:
    """(video_id, cdml_emb) for the videos that have content; the others get no row (their
    number is `content.missing`). cdml_emb is fixed_size_list<float32>[out_dim]."""
    if len(video_ids) != len(content.mask):
        raise ValueError("video_ids and content must have the same number of rows")
    rows = np.flatnonzero(content.mask)
    vecs = embed(tower, content.features[rows], **embed_kw)
    dim = tower.config.out_dim
    ids = pa.array(list(video_ids), pa.string()).take(pa.array(rows, pa.int64()))
    values = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)
    return pa.table({"video_id": ids, "cdml_emb": values})
