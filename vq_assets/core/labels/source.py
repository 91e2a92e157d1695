"""Where a creation day's labels come from: exact, from the watch events' per-event-day partials,
or, for platforms that keep only daily rollups, from ``video_daily_stats`` (7 calendar days).

A lake without any ``watch_events`` landing (no ``landing/watch_events`` folder at all) takes
its labels from the daily stats whatever the preference: there is nothing else to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from vq_assets.core.labels import daily_stats
from vq_assets.core.labels.windows import WINDOW_DAYS, labels_from_partials, shift
from vq_assets.core.lake.store import Lake, LakeError, PartitionFiles

EVENTS_TABLE = "watch_events"


def events_landed(lake: Lake) -> bool:
    """Whether the lake's landing zone has a `watch_events` table at all (any day, complete or
    not). A platform that keeps only daily rollups has none: its chain skips the events."""
    return lake.exists(lake.path("landing", EVENTS_TABLE))


@dataclass(frozen=True)
class LabelSource:
    """``kind`` is ``daily_stats`` or ``watch_events``; ``days`` the days it must read."""

    kind: str
    days: tuple[str, ...]
    description: str


def choose_label_source(lake: Lake, day: str, prefer_daily_stats: bool) -> LabelSource:
    """Daily stats when preferred and all 7 of their days are complete, or when the lake has no
    watch events at all; else the events."""
    stats_days = tuple(shift(day, i) for i in range(WINDOW_DAYS))
    calendar = "7 calendar days from the creation day"
    if not events_landed(lake):
        return LabelSource(
            "daily_stats",
            stats_days,
            f"video_daily_stats (the lake has no watch_events): {calendar}",
        )
    if prefer_daily_stats and all(lake.day_complete(daily_stats.TABLE, d) for d in stats_days):
        return LabelSource("daily_stats", stats_days, f"video_daily_stats: {calendar}")
    return LabelSource(
        "watch_events",
        tuple(shift(day, i) for i in range(WINDOW_DAYS + 1)),
        "watch_events: exact window [created_at, created_at + 7 days)",
    )


@dataclass(frozen=True)
class DayLabels:
    """A creation day's labels and what reading their source found.

    For daily stats, ``rows_read = rows_valid + quarantined.rows + duplicates_dropped`` over the
    window's landing days; for events (validated at ingest) the counts stay 0.
    """

    labels: pa.Table
    days_read: list[str]
    rows_read: int = 0
    rows_valid: int = 0
    duplicates_dropped: int = 0
    quarantined: daily_stats.QuarantinedRows = field(default_factory=daily_stats.QuarantinedRows)


def labels_for_day(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    day: str,
    source: LabelSource,
    partials: PartitionFiles,
) -> DayLabels:
    """The labels of the videos in view `videos` (created on `day`), with the days read and the
    source rows quarantined on the way.

    Daily-stats rows that break their contract go to the quarantine, day by day, and are
    weighed against the day's videos (`QuarantinedRows`). From events, every partial of event
    days D..D+7 must exist: a label is never computed on a half-open window.
    """
    if source.kind == "daily_stats":
        checked = [daily_stats.validate_daily_stats_day(con, lake, d) for d in source.days]
        for d, result in zip(source.days, checked, strict=True):
            lake.write_table(lake.quarantine_dir(daily_stats.TABLE, d), result.rejects)
        con.register("daily_stats", pa.concat_tables([c.valid for c in checked]))
        labels = daily_stats.labels_from_daily_stats(con, day)
        lost = daily_stats.quarantined_rows(con, pa.concat_tables([c.rejects for c in checked]))
        return DayLabels(
            labels,
            list(source.days),
            rows_read=sum(c.rows_read for c in checked),
            rows_valid=sum(c.valid.num_rows for c in checked),
            duplicates_dropped=sum(c.duplicates_dropped for c in checked),
            quarantined=lost,
        )
    read = list(partials.days)
    if read != list(source.days):
        missing = sorted(set(source.days) - set(read))
        raise LakeError(
            f"video_watch_daily is not materialized for {missing}: the window of {day} is not "
            f"complete (and no video_daily_stats for {shift(day, 0)}..{shift(day, 6)})"
        )
    partials.register(con, "partials")
    return DayLabels(labels_from_partials(con, day), read)
