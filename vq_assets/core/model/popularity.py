"""The Bilibili study's popularity classes: a composite score over 7-day plays, likes, comments
and shares, cut into 5 ordered classes.

    score = sum_i w_i * (log1p(x_i) - mean_i) / std_i        (mean, std: the training days)
    class = number of training-day quintile cuts the score reaches (0 = least popular .. 4)

The study weighs views, likes, coins, favourites and shares; vq's contract has no coins or
favourites, and has comments, so the components are plays, likes, comments and shares, with
weights from the training settings. A component the source does not keep (null on every
training row) is left out and the other weights carry the score; a row with a used component
null has no score (and no class).

The scale is fitted on the training days of each model and saved with it (``to_dict``), so a
test day's classes are cut where the model's training days put them, and a new video's
predicted score turns into classes the same way. Class probabilities treat the score's error as
Gaussian with the residual spread measured on the validation days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

COMPONENTS = ("plays", "likes", "comments", "shares")
CLASSES = 5


@dataclass(frozen=True)
class PopularityScale:
    weights: dict[str, float]  # used components only
    means: dict[str, float]
    stds: dict[str, float]
    cuts: tuple[float, ...]  # CLASSES - 1 increasing score cuts
    residual_sd: float = 1.0

    @classmethod
    def fit(
        cls, counters: Mapping[str, np.ndarray], rows: np.ndarray, weights: tuple[float, ...]
    ) -> PopularityScale | None:
        """The scale of the ``rows`` (a boolean mask: the training days); None when no component
        has a label there."""
        if len(weights) != len(COMPONENTS):
            raise ValueError(f"popularity weights: one per {COMPONENTS}, got {weights}")
        used = {
            c: float(w)
            for c, w in zip(COMPONENTS, weights, strict=True)
            if w != 0 and np.isfinite(np.asarray(counters[c], float)[rows]).any()
        }
        if not used:
            return None
        means, stds = {}, {}
        for c in used:
            x = np.log1p(np.asarray(counters[c], float)[rows])
            x = x[np.isfinite(x)]
            means[c], stds[c] = float(x.mean()), float(x.std()) or 1.0
        scale = cls(used, means, stds, cuts=())
        score = scale.score(counters)[rows]
        score = score[np.isfinite(score)]
        if score.size == 0:
            return None
        cuts = np.quantile(score, np.arange(1, CLASSES) / CLASSES)
        return replace(scale, cuts=tuple(float(c) for c in cuts))

    def score(self, counters: Mapping[str, np.ndarray]) -> np.ndarray:
        """The composite score per row; NaN where a used component is null."""
        total: np.ndarray | None = None
        for c, w in self.weights.items():
            z = w * (np.log1p(np.asarray(counters[c], float)) - self.means[c]) / self.stds[c]
            total = z if total is None else total + z
        assert total is not None
        return total

    def classes(self, score: np.ndarray) -> np.ndarray:
        """Class per row, 0..4, as float (NaN where the score is)."""
        score = np.asarray(score, float)
        out = np.searchsorted(np.asarray(self.cuts), score, side="right").astype(float)
        out[~np.isfinite(score)] = np.nan
        return out

    def probabilities(self, predicted: np.ndarray) -> np.ndarray:
        """``[n, 5]`` class probabilities of a predicted score: the mass of N(predicted,
        residual_sd^2) between consecutive cuts."""
        predicted = np.asarray(predicted, float)[:, None]
        edges = np.array([-np.inf, *self.cuts, np.inf])[None, :]
        cdf = stats.norm.cdf((edges - predicted) / self.residual_sd)
        return np.diff(cdf, axis=1)

    def predicted_classes(self, predicted: np.ndarray) -> np.ndarray:
        """The most probable class of each predicted score (NaN where it is not finite)."""
        predicted = np.asarray(predicted, float)
        out = np.full(predicted.shape, np.nan)
        ok = np.isfinite(predicted)
        if ok.any():
            out[ok] = self.probabilities(predicted[ok]).argmax(axis=1)
        return out

    def with_residual(self, predicted: np.ndarray, score: np.ndarray) -> PopularityScale:
        """The scale with ``residual_sd`` measured on validation rows."""
        r = np.asarray(score, float) - np.asarray(predicted, float)
        r = r[np.isfinite(r)]
        return replace(self, residual_sd=float(r.std()) if r.size > 1 and r.std() > 0 else 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cuts": list(self.cuts)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PopularityScale:
        return cls(**{**d, "cuts": tuple(d["cuts"])})
