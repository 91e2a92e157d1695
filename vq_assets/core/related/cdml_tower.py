"""The CDML tower and its loss (Collaborative Deep Metric Learning, DESIGN §11).

A tower maps content features to a unit vector; the triplet loss pulls a co-watched pair
together and pushes the anchor away from a negative chosen inside the mini-batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vq_assets.core.related.search import exact_top_k

Negatives = Literal["semi-hard", "hardest"]
WeightTransform = Literal["log1p", "linear", "none"]


@dataclass(frozen=True)
class CDMLConfig:
    """The tower's shape and its training. `in_dim` is `content.content_dim(...)`."""

    in_dim: int
    hidden: tuple[int, ...] = (256, 128)
    out_dim: int = 64
    margin: float = 0.2  # in squared-L2 units on the unit sphere (distances lie in [0, 4])
    negatives: Negatives = "semi-hard"
    symmetric: bool = True  # each pair trains both ways: a -> b and b -> a
    weight_transform: WeightTransform = "log1p"  # co-watching users -> a pair's loss weight
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    val_k: int = 20

    def __post_init__(self) -> None:
        if self.negatives not in ("semi-hard", "hardest"):
            raise ValueError(f"negatives must be 'semi-hard' or 'hardest', not {self.negatives!r}")
        if self.weight_transform not in ("log1p", "linear", "none"):
            raise ValueError(f"unknown weight_transform {self.weight_transform!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: negatives come from the batch")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CDMLConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


class CDMLTower(nn.Module):
    """Content features -> L2-normalised embedding.

    Standardise with the training set's per-feature mean and scale (buffers, so they travel
    with the weights), then an MLP of `hidden` ReLU layers, a linear `out_dim` layer and L2
    normalisation.

    Args:
        config: in_dim, hidden, out_dim.

    Call Args:
        x (torch.Tensor): [B, in_dim] content features.

    Returns:
        torch.Tensor: [B, out_dim], each row of unit L2 norm.
    """

    def __init__(self, config: CDMLConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.in_dim))
        self.register_buffer("scale", torch.ones(config.in_dim))
        layers: list[nn.Module] = []
        width = config.in_dim
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, config.out_dim))
        self.mlp = nn.Sequential(*layers)

    def set_standardisation(self, features: np.ndarray) -> None:
        """Mean and scale from training features [n, in_dim]; a constant column keeps scale
        1 (dividing by a tiny std would blow a rare one-hot up into a huge input)."""
        x = np.asarray(features, np.float64)
        std = x.std(axis=0)
        self.mean.copy_(torch.from_numpy(x.mean(axis=0)).float())
        self.scale.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp((x - self.mean) / self.scale), dim=-1)


def triplet_loss_in_batch(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    margin: float,
    mode: Negatives = "semi-hard",
    *,
    anchor_ids: torch.Tensor | None = None,
    positive_ids: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triplet loss with negatives reassigned inside the batch.

    anchor, positive: [B, D]; row i is a co-watched pair. Anchor i's candidate negatives are
    the other rows' positives, except a video equal to anchor i's own or to its positive
    (`anchor_ids`, `positive_ids` [B], when given). With squared L2 distances d:

    - hardest: n_i = argmin_j d(a_i, p_j), the closest candidate;
    - semi-hard (FaceNet): the closest candidate farther than the positive,
      d(a_i, p_j) > d(a_i, p_i); where none is, the hardest.

    Loss_i = max(0, d(a_i, p_i) - d(a_i, n_i) + margin); the result is the `weight`-weighted
    mean (`weight` [B], default 1) over anchors that have a candidate (0 when none has).
    """
    if mode not in ("semi-hard", "hardest"):
        raise ValueError(f"mode must be 'semi-hard' or 'hardest', not {mode!r}")
    b = anchor.shape[0]
    d_ap = (anchor - positive).pow(2).sum(dim=1)  # [B]
    sq_a = anchor.pow(2).sum(dim=1, keepdim=True)
    sq_p = positive.pow(2).sum(dim=1)
    d_an = (sq_a + sq_p[None, :] - 2.0 * anchor @ positive.T).clamp_min(0.0)  # [B, B]
    valid = ~torch.eye(b, dtype=torch.bool, device=anchor.device)
    if positive_ids is not None:
        valid &= positive_ids[None, :] != positive_ids[:, None]
        if anchor_ids is not None:
            valid &= positive_ids[None, :] != anchor_ids[:, None]
    inf = torch.tensor(torch.inf, dtype=d_an.dtype, device=d_an.device)
    hardest = torch.where(valid, d_an, inf).min(dim=1).values
    if mode == "hardest":
        negative = hardest
    else:
        farther = valid & (d_an > d_ap[:, None])
        semi = torch.where(farther, d_an, inf).min(dim=1).values
        negative = torch.where(torch.isfinite(semi), semi, hardest)
    has = valid.any(dim=1)
    # Rows without a candidate: a finite stand-in, then weight 0 (no inf reaches autograd math).
    negative = torch.where(has, negative, d_ap.detach() + margin)
    losses = F.relu(d_ap - negative + margin)
    w = torch.ones_like(losses) if weight is None else weight.to(losses.dtype)
    w = w * has.to(losses.dtype)
    total = w.sum()
    return (losses * w).sum() / total if total > 0 else losses.sum() * 0.0


@torch.no_grad()
def embed(
    tower: CDMLTower,
    content: np.ndarray,
    *,
    batch_size: int = 8192,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """[n, out_dim] float32 unit vectors for content features [n, in_dim], in eval mode."""
    was_training = tower.training
    tower.eval().to(device)
    x = np.asarray(content, np.float32)
    out = np.zeros((len(x), tower.config.out_dim), np.float32)
    for start in range(0, len(x), batch_size):
        chunk = torch.from_numpy(x[start : start + batch_size]).to(device)
        out[start : start + len(chunk)] = tower(chunk).float().cpu().numpy()
    tower.train(was_training)
    return out


def recall_at_k(
    query_vecs: np.ndarray,
    corpus_vecs: np.ndarray,
    true_pairs: tuple[np.ndarray, np.ndarray],
    k: int,
    *,
    self_index: np.ndarray | None = None,
) -> float:
    """Mean over queries of |top-k ∩ true| / |true| (exact search by inner product).

    true_pairs: (query rows, corpus rows), one entry per relevant (query, corpus) pair;
    `self_index` [q]: each query's own corpus row (-1 if none), never retrieved. Queries
    without a true pair do not count; NaN when no query has one.
    """
    q_rows = np.asarray(true_pairs[0], np.int64)
    c_rows = np.asarray(true_pairs[1], np.int64)
    if self_index is not None:  # a query's own row is never retrieved, so it is not a target
        keep = c_rows != np.asarray(self_index, np.int64)[q_rows]
        q_rows, c_rows = q_rows[keep], c_rows[keep]
    if len(q_rows) == 0:
        return float("nan")
    n_c = len(corpus_vecs)
    unique = np.unique(q_rows * n_c + c_rows)
    q_rows, c_rows = unique // n_c, unique % n_c
    _, positions = exact_top_k(query_vecs, corpus_vecs, k, self_position=self_index)
    hit = (positions[q_rows] == c_rows[:, None]).any(axis=1)
    n_q = len(query_vecs)
    hits = np.bincount(q_rows, weights=hit, minlength=n_q)
    truth = np.bincount(q_rows, minlength=n_q)
    has = truth > 0
    return float(np.mean(hits[has] / truth[has]))
