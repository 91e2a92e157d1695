"""Where a creation day's labels come from: exact, from the watch events' per-event-day partials,
or, for platforms that keep only daily rollups, from ``video_daily_stats`` (7 calendar days)."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from vq_assets.core.labels import daily_stats
from vq_assets.core.labels.windows import WINDOW_DAYS, labels_from_partials, shift
from vq_assets.core.lake.store import Lake, LakeError, PartitionFiles


@dataclass(frozen=True)
class LabelSource:
    """``kind`` is ``daily_stats`` or ``watch_events``; ``days`` the days it must read."""

    kind: str
    days: tuple[str, ...]
    description: str


def choose_label_source(lake: Lake, day: str, prefer_daily_stats: bool) -> LabelSource:
    """Daily stats when preferred and all 7 of their days are complete; else the events."""
    stats_days = tuple(shift(day, i) for i in range(WINDOW_DAYS))
    if prefer_daily_stats and all(lake.day_complete(daily_stats.TABLE, d) for d in stats_days):
        return LabelSource(
            "daily_stats", stats_days, "video_daily_stats: 7 calendar days from the creation day"
        )
    return LabelSource(
        "watch_events",
        tuple(shift(day, i) for i in range(WINDOW_DAYS + 1)),
        "watch_events: exact window [created_at, created_at + 7 days)",
    )


def labels_for_day(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    day: str,
    source: LabelSource,
    partials: PartitionFiles,
) -> tuple[pa.Table, list[str], int]:
    """The labels of the videos in view `videos` (created on `day`), the days read, and how many
    source rows were quarantined on the way.

    Daily-stats rows that break their contract go to the quarantine, day by day. From events,
    every partial of event days D..D+7 must exist: a label is never computed on a half-open
    window.
    """
    if source.kind == "daily_stats":
        checked = [daily_stats.validate_daily_stats_day(con, lake, d) for d in source.days]
        for d, result in zip(source.days, checked, strict=True):
            lake.write_table(lake.quarantine_dir(daily_stats.TABLE, d), result.rejects)
        con.register("daily_stats", pa.concat_tables([c.valid for c in checked]))
        quarantined = sum(c.rejects.num_rows for c in checked)
        return daily_stats.labels_from_daily_stats(con, day), list(source.days), quarantined
    read = list(partials.days)
    if read != list(source.days):
        missing = sorted(set(source.days) - set(read))
        raise LakeError(
            f"video_watch_daily is not materialized for {missing}: the window of {day} is not "
            f"complete (and no video_daily_stats for {shift(day, 0)}..{shift(day, 6)})"
        )
    partials.register(con, "partials")
    return labels_from_partials(con, day), read, 0
