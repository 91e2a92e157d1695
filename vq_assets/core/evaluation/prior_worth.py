""" "The prior is worth N impressions": how many early plays a new video needs before its
realised skip rate ranks videos by their 7-day skip rate as well as vq's creation-time
prediction does. The business case for the prior: a retriever without it must spend that many
impressions on every new video to learn what vq knew at upload.

Pure numpy/pyarrow. The caller passes the videos of some creation days (their 7-day skip-rate
labels and vq's predicted skip rate) and the watch events of their windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.evaluation.metrics import spearman, spearman_gap
from vq_assets.core.labels.windows import WINDOW_DAYS

PLAY_COUNTS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
SKIP_SECONDS = 3.0  # the label's skip (DESIGN §4)


@dataclass(frozen=True)
class PriorWorth:
    table: pa.Table  # one row per N: videos, both Spearmans, the gap and its interval
    worth: int | None  # smallest N whose early Spearman reaches vq's; None: beyond every N

    def summary(self) -> str:
        if self.worth is None:
            largest = self.table["n_plays"][-1].as_py() if self.table.num_rows else 0
            return f"the prior is worth more than {largest} impressions"
        return f"the prior is worth {self.worth} impressions"


def early_skip_rates(
    events: pa.Table, videos: pa.Table, play_counts: Sequence[int] = PLAY_COUNTS
) -> dict[int, np.ndarray]:
    """``{N: [videos]}`` the skip share of each video's first N plays (by ``event_ts``) inside
    its window [created_at, + 7 days); NaN for a video with fewer than N plays there."""
    vidx = pc.fill_null(pc.index_in(events["video_id"], value_set=videos["video_id"]), -1)
    vidx = vidx.to_numpy(zero_copy_only=False).astype(np.int64)
    ts = events["event_ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    created = videos["created_at"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    start = np.where(vidx >= 0, created[np.maximum(vidx, 0)], 0)
    keep = (vidx >= 0) & (ts >= start) & (ts < start + WINDOW_DAYS * 86_400_000_000)
    v, t = vidx[keep], ts[keep]
    skip = events["watch_time_s"].to_numpy(zero_copy_only=False)[keep] < SKIP_SECONDS
    order = np.lexsort((t, v))
    v, skip = v[order], skip[order]
    counts = np.bincount(v, minlength=videos.num_rows)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each video's first sorted event
    cum = np.cumsum(skip)  # skips up to and including each sorted event
    out = {}
    for n in play_counts:
        has = counts >= n
        at = first[has] + n - 1
        before = np.where(first[has] > 0, cum[np.maximum(first[has] - 1, 0)], 0)
        rate = np.full(videos.num_rows, np.nan)
        rate[has] = (cum[at] - before) / n
        out[n] = rate
    return out


def prior_worth(
    events: pa.Table,
    videos: pa.Table,
    play_counts: Sequence[int] = PLAY_COUNTS,
    resamples: int = 200,
    seed: int = 0,
) -> PriorWorth:
    """For every N of ``play_counts``: on the videos with >= N plays in their window, the
    Spearman of their first N plays' skip share with their 7-day ``skip_rate``, against the
    Spearman of vq's ``pred_skip_rate`` on the same videos, and the gap (early - vq) with a 95%
    paired-bootstrap interval over videos (``resamples`` = 0: no interval).

    The early plays are part of the 7-day window, so their agreement with the label is partly
    overlap: the N found is a lower bound on what the prior is worth. The set of videos shrinks
    as N grows (only videos that reach N plays), which is why vq's Spearman is recomputed on
    each set rather than quoted once.
    """
    label = videos["skip_rate"].to_numpy(zero_copy_only=False).astype(np.float64)
    pred = videos["pred_skip_rate"].to_numpy(zero_copy_only=False).astype(np.float64)
    rows = []
    worth = None
    for n, early in early_skip_rates(events, videos, play_counts).items():
        on = np.isfinite(early) & np.isfinite(label) & np.isfinite(pred)
        e, p, y = early[on], pred[on], label[on]
        early_rho, vq_rho = spearman(e, y), spearman(p, y)
        gap, low, high = (
            spearman_gap(e, p, y, resamples=resamples, seed=seed)
            if resamples
            else (early_rho - vq_rho, np.nan, np.nan)
        )
        if worth is None and np.isfinite(gap) and gap >= 0:
            worth = n
        rows.append(
            {
                "n_plays": n,
                "videos": int(on.sum()),
                "early_spearman": early_rho,
                "vq_spearman": vq_rho,
                "gap": gap,
                "gap_ci_low": low,
                "gap_ci_high": high,
            }
        )
    return PriorWorth(pa.Table.from_pylist(rows), worth)
