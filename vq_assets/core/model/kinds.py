"""What a task's kind means for every stage: the head's training space, its loss, its starting
bias, its recalibration, and the scale the flywheel z-scores it on.

- ``log1p``: a count or a time, regressed as ``log1p(label)`` with squared error; the head's
  output is ``log1p`` of the prediction.
- ``binomial``: a share of plays (at most 1 per play), trained with the play-weighted binomial
  likelihood; the head's output is the logit.
- ``rate``: events per play that can pass 1 (a play can bring a like *and* a comment), trained
  with the Poisson likelihood with exposure ``plays``: ``plays * (λ - r log λ)``; the head's
  output is ``log λ``.
- ``ordinal``: the 5-class popularity. The head regresses the continuous composite score the
  classes are cut from (squared error); classes and their probabilities come from that score
  (``popularity.PopularityScale``). Why not cumulative logits: the score ranks videos within a
  class too, which a cumulative-logit head throws away, and its class cuts are fixed quantiles,
  so a Gaussian residual calibrated on validation days gives the class probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The least log1p variance a loss is scaled by: at most 100x (virality's is ~0.03).
MIN_LOG1P_VARIANCE = 0.01


@dataclass(frozen=True)
class Kind:
    name: str
    per_play: bool  # a rate per play: its loss and calibration weigh rows by plays
    quality_metric: str  # the metric beside Spearman a user follows: MAE or calibration

    def natural(self, out: torch.Tensor) -> torch.Tensor:
        """Training-space head output -> natural units."""
        if self.name == "log1p":
            # A count or a time is never negative: a head a little below 0 (after
            # recalibration's shift, say) means 0, not -0.02 likes.
            return torch.expm1(out.clamp(min=0.0))
        if self.name == "binomial":
            return torch.sigmoid(out)
        if self.name == "rate":
            return torch.exp(out.clamp(max=30.0))
        return out

    def loss(
        self, out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, plays: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-row loss, per-row weight)``; ``target`` is 0 where not ``valid``."""
        if self.name == "binomial":
            weight = torch.where(valid, plays, torch.zeros_like(plays))
            return F.binary_cross_entropy_with_logits(out, target, reduction="none"), weight
        if self.name == "rate":
            weight = torch.where(valid, plays, torch.zeros_like(plays))
            return torch.exp(out.clamp(max=30.0)) - target * out, weight
        per_row = (out - torch.log1p(target)) ** 2 if self.name == "log1p" else (out - target) ** 2
        return per_row, valid.float()

    def base(self, y: np.ndarray, plays: np.ndarray) -> float:
        """The head's starting bias from the non-null training labels ``y``."""
        if self.name == "log1p":
            return float(np.log1p(y).mean())
        if self.name == "ordinal":
            return float(y.mean())
        rate = float((y * plays).sum() / max(float(plays.sum()), 1.0))
        if self.name == "rate":
            return math.log(max(rate, 1e-6))
        rate = min(max(rate, 1e-4), 1 - 1e-4)
        return math.log(rate / (1 - rate))

    def shift(self, pred: np.ndarray, y: np.ndarray, plays: np.ndarray) -> float:
        """The constant, in training space, that makes the mean prediction on validation rows
        match the labels (non-null rows only): the mean residual of log1p values or scores,
        predicted events = realised events for a rate per play."""
        if self.name == "log1p":
            return float(np.mean(np.log1p(y) - np.log1p(pred)))
        if self.name == "ordinal":
            return float(np.mean(y - pred))
        keep = plays > 0
        pred, y, plays = pred[keep], y[keep], plays[keep]
        if not keep.any():
            return 0.0
        if self.name == "rate":
            expected = float((pred * plays).sum())
            actual = float((y * plays).sum())
            return math.log(actual / expected) if actual > 0 and expected > 0 else 0.0
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        return _logit_shift(np.log(p / (1 - p)), y, plays)

    def loss_scale(self, y: np.ndarray, plays: np.ndarray) -> float:
        """The factor of this task's per-row loss, from its non-null training labels ``y``, so
        that every head learns at a comparable pace in the shared body.

        ``log1p``: 1 / the variance of ``log1p(y)``, the squared error in units of the label's
        own spread. Virality (views per follower, mostly under 1) varies 40x less on log1p than
        plays do; unscaled, its loss was too small to shape the body, and the network ranked it
        0.11-0.17 Spearman below LightGBM. ``rate``: 1 / the pooled rate, since a rare rate's
        Poisson gradient ``λ - r`` is of the rate's own size (0.02 for engagement). Others: 1.
        """
        if self.name == "log1p":
            # floored: labels that hardly vary would otherwise get an exploding factor
            return 1.0 / max(float(np.var(np.log1p(y))), MIN_LOG1P_VARIANCE) if len(y) > 1 else 1.0
        if self.name == "rate":
            rate = float((y * plays).sum() / max(float(plays.sum()), 1.0))
            return 1.0 / max(rate, 1e-6)
        return 1.0

    def ranked(self, x: np.ndarray) -> np.ndarray:
        """The scale on which a prediction is z-scored in the quality score: counts and times
        on log1p (clipped at 0: below 0 is model noise, not information), others as they are."""
        return np.log1p(np.clip(x, 0.0, None)) if self.name == "log1p" else x


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


KINDS: dict[str, Kind] = {
    "log1p": Kind("log1p", per_play=False, quality_metric="MAE"),
    "binomial": Kind("binomial", per_play=True, quality_metric="calibration"),
    "rate": Kind("rate", per_play=True, quality_metric="calibration"),
    "ordinal": Kind("ordinal", per_play=False, quality_metric="accuracy"),
}
