"""The second landing table, `video_daily_stats`: per video and UTC day, pre-aggregated counts.

Some sources deliver no raw watch events, only daily per-video counters. Labels from such a
table cover 7 CALENDAR days (the creation day D and D+1..D+6), not the exact window
[c, c + 7 days) of DESIGN §4: a video created at 23:00 loses almost a day of its first week and
gains nothing back. Likewise its day 0 (`day0_plays`, the day-0 term of `virality`) is the
creation calendar day D, the row with `day` = D, not [c, c + 24 h). `labels_from_daily_stats`
therefore is a second, coarser label source; `daily_stats_from_events` builds the table from
events, so both sources can be compared.

    <lake>/landing/video_daily_stats/dt=YYYY-MM-DD/*.parquet  + _SUCCESS   (dt = `day`)

Platforms keep different counters. Only `video_id`, `day` and `plays` are required; every other
counter is nullable, and a file may leave its column out altogether (read as all null): null
means "not kept", never 0. A label built from a counter is null for a video when the counter is
null on any of its rows in the window, since a partial sum would undercount.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.windows import LABELS_SCHEMA, SKIP_SECONDS, WINDOW_DAYS, virality_sql
from vq_assets.core.lake.contract import TableContract, ValidatedDay, validate_day
from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import Lake

TABLE = "video_daily_stats"

COUNT_COLUMNS = ("plays", "skips", "full_watches", "likes", "comments", "shares")
# Counters a source may not keep: nullable, and their columns may be absent from a file.
OPTIONAL_COUNTS = COUNT_COLUMNS[1:]
OPTIONAL_COLUMNS = (*OPTIONAL_COUNTS, "watch_time_s_sum")

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
# A null optional counter breaks no rule (NULL < 0 is not TRUE): it is a counter not kept.
DAILY_STATS_RULES: list[tuple[str, str]] = [
    ("video_id is missing", "video_id IS NULL OR trim(video_id) = ''"),
    ("day is missing", "day IS NULL"),
    ("day outside the partition", "day <> DATE '{day_start}'"),
    ("plays is missing", "plays IS NULL"),
    ("plays is not >= 0", "plays < 0"),
    *((f"{c} is not >= 0", f"{c} < 0") for c in OPTIONAL_COUNTS),
    *((f"{c} > plays", f"{c} > plays") for c in OPTIONAL_COUNTS),
    ("watch_time_s_sum is not >= 0", "isnan(watch_time_s_sum) OR watch_time_s_sum < 0"),
    ("watch_time_s_sum is not finite", "isinf(watch_time_s_sum)"),
]


# Exact copies of a row (a re-delivered file) are dropped and counted; two different rows for
# one (video_id, day) are quarantined after the first, since which one is right is unknown.
DAILY_STATS = TableContract(
    TABLE,
    DAILY_STATS_SCHEMA,
    DAILY_STATS_RULES,
    unique_key="video_id",
    drop_exact_duplicates=True,
    optional=frozenset(OPTIONAL_COLUMNS),
)


def validate_daily_stats_day(con: duckdb.DuckDBPyConnection, lake: Lake, day: str) -> ValidatedDay:
    """Validate one landing day of `video_daily_stats` against its contract.

    A (video_id, day) pair appears once: exact copies are dropped (`duplicates_dropped`), other
    rows repeating the pair are quarantined, since summing them would count plays twice.
    Optional counter columns missing from a file come back as typed nulls.
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

    A counter label (and `avg_watch_time_s` from `watch_time_s_sum`) is null for a video when
    the counter is null on any of its rows in the window. A video with no rows has 0 plays; its
    other counters are 0 when the source keeps them (some row of the window's data has a value)
    and null when it does not. Ratios are taken after summing and are null without plays or
    without their counters; `day0_plays` is the row of day D; `early_events` is 0 because daily
    counters cannot see events before `created_at`.
    """
    start = sql_date(day)
    stray = con.sql(
        f"SELECT count(*) FROM videos WHERE CAST(created_at AS DATE) <> DATE '{start}'"
    ).fetchall()[0][0]
    if stray:
        raise ValueError(f"view videos holds {stray} videos not created on {day}")
    nullable = (*OPTIONAL_COUNTS, "watch_time_s_sum")
    # NULL as soon as one row of the video lacks the counter: a partial sum would undercount.
    sums = ",\n".join(f"CASE WHEN count({c}) = count(*) THEN sum({c}) END AS {c}" for c in nullable)
    kept = ", ".join(f"count({c}) > 0 AS {c}" for c in nullable)
    # A video without rows: 0 for a counter the source keeps, null for one it does not.
    counts = ",\n".join(
        f"CAST(CASE WHEN s.video_id IS NULL THEN CASE WHEN kept.{c} THEN 0 END ELSE s.{c} END "
        f"AS BIGINT) AS {c}"
        for c in OPTIONAL_COUNTS
    )
    col = {c: f"lab.{c}" for c in LABELS_SCHEMA.names}
    virality = virality_sql(col["day0_plays"], col["plays"], col["followers"])
    return (
        con.sql(
            f"""
            WITH w AS (
                SELECT * FROM daily_stats
                WHERE day >= DATE '{start}' AND day < DATE '{start}' + {WINDOW_DAYS}
            ),
            kept AS (SELECT {kept} FROM w),
            s AS (
                SELECT video_id, CAST(sum(plays) AS BIGINT) AS plays,
                       CAST(sum(plays) FILTER (WHERE day = DATE '{start}') AS BIGINT)
                           AS day0_plays,
                       {sums}
                FROM w GROUP BY video_id
            ),
            lab AS (
                SELECT
                    v.video_id, v.creator_id, v.created_at,
                    coalesce(s.plays, 0) AS plays,
                    {counts},
                    coalesce(s.day0_plays, 0) AS day0_plays,
                    s.watch_time_s_sum AS wt_sum,
                    v.creator_followers AS followers
                FROM videos v LEFT JOIN s USING (video_id) CROSS JOIN kept
            )
            SELECT
                video_id, creator_id, created_at, plays, skips, full_watches,
                CASE WHEN plays > 0 THEN wt_sum / plays END AS avg_watch_time_s,
                CASE WHEN plays > 0 THEN skips / plays END AS skip_rate,
                likes, comments, shares,
                CASE WHEN plays > 0 THEN (likes + comments) / plays END AS engagement_rate,
                day0_plays, followers, {virality} AS virality,
                0 AS early_events
            FROM lab
            ORDER BY video_id
            """
        )
        .to_arrow_table()
        .cast(LABELS_SCHEMA)
    )


@dataclass(frozen=True)
class QuarantinedRows:
    """Daily-stats rows of a label window that were quarantined, and the share of them that
    belongs to the label day's own videos (whose labels lose those rows' plays)."""

    rows: int = 0
    plays: int = 0  # summed over rows whose plays is readable (not null, >= 0)
    unattributed_rows: int = 0  # video_id missing: cannot tell whose plays they were
    rows_of_day_videos: int = 0
    plays_of_day_videos: int = 0
    # reason -> rows, over the rows of the day's videos
    reasons_of_day_videos: dict[str, int] = field(default_factory=dict)

    @property
    def loses_plays(self) -> bool:
        return self.rows_of_day_videos > 0


def quarantined_rows(con: duckdb.DuckDBPyConnection, rejects: pa.Table) -> QuarantinedRows:
    """What `rejects` (quarantined daily-stats rows of the window) takes from the labels of the
    videos in view `videos`."""
    if not rejects.num_rows:
        return QuarantinedRows()
    con.register("rejected_stats", rejects)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE rejected_marked AS SELECT r.*, "
            "r.video_id IN (SELECT video_id FROM videos) AS of_day, "
            "CASE WHEN r.plays >= 0 THEN r.plays ELSE 0 END AS readable_plays "
            "FROM rejected_stats r"
        )
        totals = con.sql(
            "SELECT count(*), sum(readable_plays), "
            "count(*) FILTER (WHERE video_id IS NULL OR trim(video_id) = ''), "
            "count(*) FILTER (WHERE of_day), "
            "coalesce(sum(readable_plays) FILTER (WHERE of_day), 0) "
            "FROM rejected_marked"
        ).fetchall()[0]
        reasons = con.sql(
            "SELECT reason, count(*) FROM rejected_marked WHERE of_day GROUP BY reason ORDER BY 1"
        ).fetchall()
        con.execute("DROP TABLE rejected_marked")
    finally:
        con.unregister("rejected_stats")
    rows, plays, unattributed, of_day, of_day_plays = (int(x or 0) for x in totals)
    return QuarantinedRows(rows, plays, unattributed, of_day, of_day_plays, dict(reasons))
