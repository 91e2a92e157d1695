"""Standardisation and optional PCA whitening of the dense feature groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Whitening regulariser: eigenvalues below WHITEN_EPS * the largest are not blown up to unit
# variance, so near-degenerate directions of an embedding stay small instead of becoming noise.
WHITEN_EPS = 1e-3


@dataclass
class FeatureNormalizer:
    """Per-column standardisation of the dense groups, and optional whitening, fitted on training
    rows only.

    NaN-safe: statistics ignore NaN, and a NaN feature becomes 0 (the training mean) after
    ``transform``. Columns that are constant or all-NaN get std 1 so they pass through as 0.

    A whitened group is standardised, then rotated onto its principal axes and scaled to unit
    variance per axis (``z @ rotation``, PCA whitening). An embedding whose columns are strongly
    correlated (a few directions carry most of the variance) is badly conditioned for gradient
    descent: the directions with little variance are learnt last, after the rest of the network
    has started to overfit. Whitening lets every direction be learnt at the same pace.
    """

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    rotation: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        features: Mapping[str, np.ndarray],
        groups: Sequence[str],
        whiten: Sequence[str] = (),
    ) -> FeatureNormalizer:
        mean, std = {}, {}
        for name in groups:
            x = np.asarray(features[name], dtype=np.float64)
            finite = np.isfinite(x)
            n = finite.sum(axis=0)
            clean = np.where(finite, x, 0.0)
            m = clean.sum(axis=0) / np.maximum(n, 1)
            var = (np.where(finite, x - m, 0.0) ** 2).sum(axis=0) / np.maximum(n, 1)
            s = np.sqrt(var)
            mean[name] = m
            std[name] = np.where(s > 1e-6, s, 1.0)
        norm = cls(mean, std)
        unknown = [g for g in whiten if g not in mean]
        if unknown:
            raise ValueError(f"cannot whiten {unknown}: not among the dense groups {list(mean)}")
        for name in whiten:
            z = norm._standardise(name, features[name])
            eigval, eigvec = np.linalg.eigh(z.T @ z / max(len(z), 1))
            eigval = np.clip(eigval, 0.0, None)
            norm.rotation[name] = eigvec / np.sqrt(eigval + WHITEN_EPS * max(eigval.max(), 1e-12))
        return norm

    def _standardise(self, name: str, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean[name]) / self.std[name]
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def transform(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Normalised float32 copies of the fitted groups; other groups are passed through."""
        out = dict(features)
        for name in self.mean:
            z = self._standardise(name, features[name])
            if name in self.rotation:
                z = z @ self.rotation[name]
            out[name] = z.astype(np.float32)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.mean:
            out[name] = {"mean": self.mean[name].tolist(), "std": self.std[name].tolist()}
            if name in self.rotation:
                out[name]["rotation"] = self.rotation[name].tolist()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureNormalizer:
        return cls(
            mean={k: np.asarray(v["mean"], dtype=np.float64) for k, v in d.items()},
            std={k: np.asarray(v["std"], dtype=np.float64) for k, v in d.items()},
            rotation={
                k: np.asarray(v["rotation"], dtype=np.float64)
                for k, v in d.items()
                if "rotation" in v
            },
        )
