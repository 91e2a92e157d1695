"""The `retrieval` feature group: what the retrieval-augmented prior (`related/prior.py`)
carries per video, and how the model reads it.

For every label the catalogue's tasks learn from, the similarity-weighted mean of that label
over the video's nearest earlier videos: counts and times (``log1p`` tasks) on log1p, the space
their heads are trained in; rates as they are. The ordinal popularity task's label is a score
whose scale is fitted per model, so the prior carries its counter components
(``popularity.COMPONENTS``, on log1p as the score takes them) instead. Beside the means, the
neighbourhood's size and similarity, so that the model can learn how far to trust them.

The columns are read from the catalogue at call time (``tasks.py``), so a task added there
reaches the prior, the join and the group without another list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vq_assets.core.model import tasks
from vq_assets.core.model.popularity import COMPONENTS

# The neighbourhood of every video, beside the label means.
NEIGHBOURHOOD = ("n_neighbours", "mean_similarity", "max_similarity")


@dataclass(frozen=True)
class PriorLabel:
    """One label the prior averages: a column of ``video_labels_7d``, on log1p or as it is."""

    label: str
    log1p: bool

    @property
    def column(self) -> str:
        return f"knn_log1p_{self.label}" if self.log1p else f"knn_{self.label}"


def prior_labels() -> tuple[PriorLabel, ...]:
    """The labels of the catalogue's tasks, once each, in catalogue order."""
    found: dict[str, PriorLabel] = {}
    for task in tasks.catalogue():
        if task.kind == "ordinal":
            for c in COMPONENTS:
                found.setdefault(c, PriorLabel(c, log1p=True))
        else:
            found.setdefault(task.label, PriorLabel(task.label, log1p=task.kind == "log1p"))
    return tuple(found.values())


def prior_columns() -> tuple[str, ...]:
    """The prior's feature columns as the model join selects them."""
    return (*(p.column for p in prior_labels()), *NEIGHBOURHOOD)


def _values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def without_neighbours(table: pa.Table) -> np.ndarray:
    """[n] bool: rows whose prior found no neighbour (or that have no prior row at all)."""
    return ~(_values(table, "n_neighbours") > 0)  # NaN where the LEFT JOIN found no row


def retrieval_matrix(table: pa.Table) -> np.ndarray:
    """``[n, len(prior_labels()) + 4]`` float32, NaN-free: each label mean (0 where null), then
    ``missing`` (1 where the video has no neighbour: no prior row, no content vector, or no
    earlier labelled video), log1p(n_neighbours), mean and max similarity (0 where null)."""
    cols = [_values(table, p.column) for p in prior_labels()]
    cols += [
        without_neighbours(table).astype(np.float64),
        np.log1p(np.nan_to_num(_values(table, "n_neighbours"))),
        _values(table, "mean_similarity"),
        _values(table, "max_similarity"),
    ]
    return np.nan_to_num(np.stack(cols, axis=1)).astype(np.float32)
