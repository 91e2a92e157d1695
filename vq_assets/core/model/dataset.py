"""Training rows in memory (``QualityDataset``) and their tensor view for a network."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vq_assets.core.model import tasks
from vq_assets.core.model.network import NetworkConfig
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.popularity import PopularityScale

# (features, targets, plays) as tensors for one (per-rank) batch.
Batch = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]


@dataclass
class QualityDataset:
    """In-memory rows: one per video.

    Args:
        features: group name -> ``[n, d]`` float array (dense, NaN allowed), ``[n]`` integer
            array (categorical index) or ``[n]`` str array (a text, ``""`` when there is
            none; the network hashes it, ``ngrams.py``). May hold more groups than a model uses.
        targets: task name -> ``[n]`` float array in natural units, NaN for null. Empty when the
            dataset is only scored.
        plays: ``[n]`` play counts (weights of the skip-rate likelihood); None when only scored.
        counters: the 7-day counters an ``ordinal`` task's label is derived from
            (``popularity.COMPONENTS``), NaN for null; empty when only scored.
    """

    features: dict[str, np.ndarray]
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    plays: np.ndarray | None = None
    counters: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("QualityDataset needs at least one feature group")
        lengths = {f"feature {k}": len(v) for k, v in self.features.items()}
        lengths |= {f"target {k}": len(v) for k, v in self.targets.items()}
        lengths |= {f"counter {k}": len(v) for k, v in self.counters.items()}
        if self.plays is not None:
            lengths["plays"] = len(self.plays)
        if len(set(lengths.values())) != 1:
            raise ValueError(f"columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(next(iter(self.features.values())))

    def subset(self, rows: np.ndarray | slice) -> QualityDataset:
        return QualityDataset(
            features={k: v[rows] for k, v in self.features.items()},
            targets={k: v[rows] for k, v in self.targets.items()},
            plays=None if self.plays is None else self.plays[rows],
            counters={k: v[rows] for k, v in self.counters.items()},
        )

    def with_popularity(self, scale: PopularityScale | None) -> QualityDataset:
        """The rows with every ordinal task's target derived from ``counters`` by ``scale``
        (NaN without a scale or counters)."""
        task = tasks.ordinal()
        if task is None:
            return self
        n = len(self)
        score = scale.score(self.counters) if scale and self.counters else np.full(n, np.nan)
        return replace(self, targets={**self.targets, task.name: score})

    def save_npz(self, path: str | Path) -> None:
        arrays = {f"feature/{k}": v for k, v in self.features.items()}
        arrays |= {f"target/{k}": v for k, v in self.targets.items()}
        arrays |= {f"counter/{k}": v for k, v in self.counters.items()}
        if self.plays is not None:
            arrays["plays"] = self.plays
        np.savez(path, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path) -> QualityDataset:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            features={k[8:]: v for k, v in arrays.items() if k.startswith("feature/")},
            targets={k[7:]: v for k, v in arrays.items() if k.startswith("target/")},
            plays=arrays.get("plays"),
            counters={k[8:]: v for k, v in arrays.items() if k.startswith("counter/")},
        )


def infer_groups(
    dataset: QualityDataset,
) -> tuple[dict[str, int], dict[str, int], tuple[str, ...]]:
    """``(dense_dims, cat_cardinalities, text_groups)`` of a dataset: 2-D float groups are dense,
    1-D integer groups categorical with cardinality ``max + 1`` (so infer on all rows, not a
    split), 1-D str groups texts."""
    dense, cats, texts = {}, {}, []
    for name, values in dataset.features.items():
        if values.ndim == 2 and np.issubdtype(values.dtype, np.floating):
            dense[name] = int(values.shape[1])
        elif values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
            cats[name] = int(values.max()) + 1 if len(values) else 1
        elif values.ndim == 1 and np.issubdtype(values.dtype, np.str_):
            texts.append(name)
        else:
            raise ValueError(
                f"group {name!r}: expected [n, d] float, [n] int or [n] str, got "
                f"{values.dtype} {values.shape}"
            )
    return dense, cats, tuple(texts)


class TensorRows(Dataset):
    """Normalised tensors of a ``QualityDataset`` restricted to the model's groups and tasks.

    ``__getitems__`` serves a whole batch with one index per column instead of collating B rows.
    """

    def __init__(
        self,
        dataset: QualityDataset,
        normalizer: FeatureNormalizer,
        config: NetworkConfig,
        with_labels: bool,
    ) -> None:
        missing = [g for g in config.groups if g not in dataset.features]
        if missing:
            raise ValueError(f"dataset lacks feature groups {missing}")
        features = normalizer.transform({g: dataset.features[g] for g in config.groups})
        self.features: dict[str, torch.Tensor] = {}
        for name, dim in config.dense_dims.items():
            if features[name].shape[1:] != (dim,):
                raise ValueError(f"group {name!r}: expected [n, {dim}], got {features[name].shape}")
            self.features[name] = torch.from_numpy(features[name])
        for name, card in config.cat_cardinalities.items():
            idx = np.asarray(features[name])
            if len(idx) and (idx.min() < 0 or idx.max() >= card):
                raise ValueError(f"group {name!r}: indices must lie in [0, {card})")
            self.features[name] = torch.from_numpy(idx.astype(np.int64))
        for name, hashing in config.text_hashing.items():
            self.features[name] = torch.from_numpy(hashing.matrix(features[name].tolist()))
        n = len(dataset)
        self.targets: dict[str, torch.Tensor] = {}
        self.plays = torch.zeros(n)
        if with_labels:
            if dataset.plays is None or any(t not in dataset.targets for t in config.tasks):
                raise ValueError(f"training needs plays and targets for tasks {config.tasks}")
            self.targets = {
                t: torch.from_numpy(np.asarray(dataset.targets[t], dtype=np.float32))
                for t in config.tasks
            }
            self.plays = torch.from_numpy(np.asarray(dataset.plays, dtype=np.float32))
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, rows: list[int]) -> Batch:
        i = torch.as_tensor(rows, dtype=torch.long)
        return (
            {k: v[i] for k, v in self.features.items()},
            {k: v[i] for k, v in self.targets.items()},
            self.plays[i],
        )


def batch_as_is(batch: Batch) -> Batch:
    # Module-level (picklable) collate: TensorRows already returns a collated batch.
    return batch
