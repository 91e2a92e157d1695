"""The second landing table, `video_daily_stats`: per video and UTC day, pre-aggregated counts.

Some sources deliver no raw watch events, only daily per-video counters. Labels from such a
table cover 7 CALENDAR days (the creation day D and D+1..D+6), not the exact window
[c, c + 7 days) of DESIGN §4: a video created at 23:00 loses almost a day of its first week and
gains nothing back. `labels_from_daily_stats` therefore is a second, coarser label source;
`daily_stats_from_events` builds the table from events, so both sources can be compared.

    <lake>/landing/video_daily_stats/dt=YYYY-MM-DD/*.parquet  + _SUCCESS   (dt = `day`)
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.windows import LABELS_SCHEMA, SKIP_SECONDS, WINDOW_DAYS
from vq_assets.core.lake.contract import TableContract, ValidatedDay, validate_day
from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import Lake

TABLE = "video_daily_stats"

COUNT_COLUMNS = ("plays", "skips", "full_watches", "likes", "comments", "shares")

DAILY_STATS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("day", pa.date32()),
        *((c, pa.int64()) for c in COUNT_COLUMNS[:3]),
        ("watch_time_s_sum", pa.float64()),
        *((c, pa.int64()) for c in COUNT_COLUMNS[3:]),
    ]
)

# Same form as contract.VIDEO_RULES: (reason, SQL predicate TRUE when the row breaks the rule).
DAILY_STATS_RULES: list[tuple[str, str]] = [
    ("video_id is missing", "video_id IS NULL OR trim(video_id) = ''"),
    ("day is missing", "day IS NULL"),
    ("day outside the partition", "day <> DATE '{day_start}'"),
    *((f"{c} is not >= 0", f"{c} IS NULL OR {c} < 0") for c in COUNT_COLUMNS),
    ("skips > plays", "skips > plays"),
    ("full_watches > plays", "full_watches > plays"),
    (
        "watch_time_s_sum is not >= 0",
        "watch_time_s_sum IS NULL OR isnan(watch_time_s_sum) OR watch_time_s_sum < 0",
    ),
    ("watch_time_s_sum is not finite", "isinf(watch_time_s_sum)"),
]


DAILY_STATS = TableContract(TABLE, DAILY_STATS_SCHEMA, DAILY_STATS_RULES, unique_key="video_id")


def validate_daily_stats_day(con: duckdb.DuckDBPyConnection, lake: Lake, day: str) -> ValidatedDay:
    """Validate one landing day of `video_daily_stats` against its contract.

    A (video_id, day) pair appears once: later copies are quarantined as duplicates, since
    summing them would count the same plays twice.
    """
    return validate_day(con, lake, DAILY_STATS, day)


def daily_stats_from_events(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """`video_daily_stats` rows from view `events` joined to view `videos`.

    One row per video and UTC calendar day of its events at or after `created_at` (earlier
    events are anomalies, as in the exact labels); events of unknown videos have no duration
    and are left out.
    """
    return (
        con.sql(
            f"""
            SELECT e.video_id, CAST(e.event_ts AS DATE) AS day,
                   count(*) AS plays,
                   count(*) FILTER (WHERE e.watch_time_s < {SKIP_SECONDS}) AS skips,
                   count(*) FILTER (WHERE e.watch_time_s >= v.duration_s) AS full_watches,
                   sum(e.watch_time_s) AS watch_time_s_sum,
                   count(*) FILTER (WHERE e.liked) AS likes,
                   count(*) FILTER (WHERE e.commented) AS comments,
                   count(*) FILTER (WHERE e.shared) AS shares
            FROM events e JOIN videos v USING (video_id)
            WHERE e.event_ts >= v.created_at
            GROUP BY ALL
            ORDER BY day, e.video_id
            """
        )
        .to_arrow_table()
        .cast(DAILY_STATS_SCHEMA)
    )


def write_daily_stats(lake: Lake, stats: pa.Table) -> list[str]:
    """Write `stats` as landing days (one partition per `day`, then its marker); the days."""
    days = sorted(d.isoformat() for d in pc.unique(stats.column("day")).to_pylist())
    for day in days:
        directory = lake.landing_dir(TABLE, day)
        rows = stats.filter(pc.equal(stats.column("day"), dt.date.fromisoformat(day)))
        lake.write_table(directory, rows)
        lake.write_marker(directory)
    return days


def labels_from_daily_stats(con: duckdb.DuckDBPyConnection, day: str) -> pa.Table:
    """`LABELS_SCHEMA` labels of the videos in view `videos` (all created on `day` = D) from
    view `daily_stats` (days D..D+6): sums over the 7 calendar days starting on D.

    Ratios are taken after summing and are null without plays, as in labels.py; `early_events`
    is 0 because daily counters cannot see events before `created_at`.
    """
    start = sql_date(day)
    stray = con.sql(
        f"SELECT count(*) FROM videos WHERE CAST(created_at AS DATE) <> DATE '{start}'"
    ).fetchall()[0][0]
    if stray:
        raise ValueError(f"view videos holds {stray} videos not created on {day}")
    return (
        con.sql(
            f"""
            WITH s AS (
                SELECT video_id, sum(watch_time_s_sum) AS wt_sum,
                       {", ".join(f"CAST(sum({c}) AS BIGINT) AS {c}" for c in COUNT_COLUMNS)}
                FROM daily_stats
                WHERE day >= DATE '{start}' AND day < DATE '{start}' + {WINDOW_DAYS}
                GROUP BY video_id
            )
            SELECT
                v.video_id, v.creator_id, v.created_at,
                coalesce(s.plays, 0) AS plays,
                coalesce(s.skips, 0) AS skips,
                coalesce(s.full_watches, 0) AS full_watches,
                CASE WHEN s.plays > 0 THEN s.wt_sum / s.plays END AS avg_watch_time_s,
                CASE WHEN s.plays > 0 THEN s.skips / s.plays END AS skip_rate,
                coalesce(s.likes, 0) AS likes,
                coalesce(s.comments, 0) AS comments,
                coalesce(s.shares, 0) AS shares,
                CASE WHEN s.plays > 0 THEN (s.likes + s.comments) / s.plays END
                    AS engagement_rate,
                0 AS early_events
            FROM videos v LEFT JOIN s USING (video_id)
            ORDER BY v.video_id
            """
        )
        .to_arrow_table()
        .cast(LABELS_SCHEMA)
    )
