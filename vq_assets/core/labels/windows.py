"""The 7-day labels (DESIGN §4) and the point-in-time creator history, in DuckDB SQL.

Labels are built in two steps so that every event day is scanned once for all the creation days
it serves:

1. `video_watch_daily`[E]: for event day E, per video created on days E-7..E, the partial
   aggregates of its events of day E that fall inside the video's own window [c, c + 7 days).
2. `video_labels_7d`[D]: the sums of those partials over event days D..D+7 for the videos created
   on D; every ratio is taken after summing, so the result equals aggregating the raw events.

Besides the §4 labels, `day0_plays` counts the plays in [c, c + 24 h) and `virality` is
ViraNova's target with vq's windows: day0_plays / followers + plays / followers (7-day plays),
where `followers` is the video's `creator_followers` at creation; null when followers is null
or 0. `followers` is kept in the label table beside it, but is not a label (not in
`LABEL_COLUMNS`): it is known at creation, and the creator features carry it already.

Watch time is summed as an integer count of 2^-50 s: a float sum depends on the order DuckDB's
threads add it in (it changed in the last digit between identical runs); an integer sum is the
same in any order. Scaling by a power of two is exact, so only bits below 2^-51 s of an event
shorter than 4 s are rounded off, far below a float sum's own error. `watch_time_sum` stays in
seconds (a double), and `avg_watch_time_s` is the integer total over plays.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import StagedFile, stream_to_parquet

WINDOW_DAYS = 7
DAY0_HOURS = 24  # `day0_plays`: plays in [created_at, created_at + 24 h)
SKIP_SECONDS = 3.0
# Watch time is summed in integer ticks of 2^-50 s (module docstring), as a DuckDB DOUBLE literal.
TICKS = f"{2**50}::DOUBLE"

PARTIAL_COUNTS = (
    "plays",
    "skips",
    "full_watches",
    "likes",
    "comments",
    "shares",
    "day0_plays",
    "early_events",
)

LABEL_COLUMNS = (
    "plays",
    "skips",
    "full_watches",
    "avg_watch_time_s",
    "skip_rate",
    "likes",
    "comments",
    "shares",
    "engagement_rate",
    "day0_plays",
    "virality",
)

# Label name -> the seed system's metric name (DESIGN §4).
SEED_NAMES = {
    "skips": "item_timespent_0to3",
    "full_watches": "num_full_watch",
    "avg_watch_time_s": "avg_watch_time",
    "skip_rate": "item_skip_ctr_7d",
}


def day_bounds(day: str | dt.date) -> tuple[str, str]:
    d = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return d.isoformat(), (d + dt.timedelta(days=1)).isoformat()


def shift(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def watch_daily_partials(con: duckdb.DuckDBPyConnection, event_day: str) -> pa.Table:
    """``watch_daily_partials_sql``'s rows as one table (the asset streams them to a file)."""
    return con.sql(watch_daily_partials_sql(event_day)).to_arrow_table()


def watch_daily_partials_sql(event_day: str) -> str:
    """Partials for `event_day` from views `videos` (days E-7..E) and `events` (day E).

    Events of unknown videos and events before a video's `created_at` never enter a label;
    the second are counted as `early_events` (anomalies) per video. One row per video with at
    least one event in its window or before it, ordered by `video_id`.

    Shaped for speed (each choice measured with EXPLAIN ANALYZE, see bench/labels.py):
    - the window end `created_at + INTERVAL 7 DAY` and the day-0 end `created_at + INTERVAL 24
      HOUR` are computed once per video, not once per event (per-event interval arithmetic was
      the costliest projection of the plan); per event, day 0 is one timestamp comparison;
    - events are grouped on an integer video key (the row number of `videos`) instead of the
      (video_id string, created_at) pair; the id is put back on the few aggregated rows;
    - no FILTER aggregates over the events: the join drops events past each video's window,
      and the rest are grouped by (key, early) with plain aggregates, so the rare early events
      (before `created_at`) form their own groups instead of every aggregate testing the
      window; only the small per-video step `a` tells the two kinds of group apart.
    """
    return f"""
        WITH v AS MATERIALIZED (  -- evaluated once: k must mean the same row in both uses
            SELECT row_number() OVER () AS k, video_id, created_at, duration_s,
                   created_at + INTERVAL {WINDOW_DAYS} DAY AS window_end,
                   created_at + INTERVAL {DAY0_HOURS} HOUR AS day0_end
            FROM videos
        ),
        g AS (
            SELECT v.k, e.event_ts < v.created_at AS early, count(*) AS n,
                   count_if(e.watch_time_s < {SKIP_SECONDS}) AS skips,
                   count_if(e.watch_time_s >= v.duration_s) AS full_watches,
                   sum(CAST(round(e.watch_time_s * {TICKS}) AS HUGEINT)) AS ticks,
                   count_if(e.liked) AS likes,
                   count_if(e.commented) AS comments,
                   count_if(e.shared) AS shares,
                   count_if(e.event_ts < v.day0_end) AS day0
            FROM events e JOIN v USING (video_id)
            WHERE e.event_ts < v.window_end
            GROUP BY ALL
        ),
        a AS (  -- one row per video: its in-window groups and its early group summed apart
            SELECT k,
                   CAST(coalesce(sum(n) FILTER (NOT early), 0) AS BIGINT) AS plays,
                   CAST(coalesce(sum(skips) FILTER (NOT early), 0) AS BIGINT) AS skips,
                   CAST(coalesce(sum(full_watches) FILTER (NOT early), 0) AS BIGINT)
                       AS full_watches,
                   CAST(coalesce(sum(ticks) FILTER (NOT early), 0) AS DOUBLE) / {TICKS}
                       AS watch_time_sum,
                   CAST(coalesce(sum(likes) FILTER (NOT early), 0) AS BIGINT) AS likes,
                   CAST(coalesce(sum(comments) FILTER (NOT early), 0) AS BIGINT) AS comments,
                   CAST(coalesce(sum(shares) FILTER (NOT early), 0) AS BIGINT) AS shares,
                   CAST(coalesce(sum(day0) FILTER (NOT early), 0) AS BIGINT) AS day0_plays,
                   CAST(coalesce(sum(n) FILTER (early), 0) AS BIGINT) AS early_events
            FROM g
            GROUP BY k
        )
        SELECT v.video_id, CAST(v.created_at AS DATE) AS created_day,
               DATE '{sql_date(event_day)}' AS event_day, a.* EXCLUDE (k)
        FROM a JOIN v USING (k)
        ORDER BY v.video_id
        """


def stage_partials(
    con: duckdb.DuckDBPyConnection, event_day: str, path: str
) -> tuple[StagedFile, int, int]:
    """``watch_daily_partials_sql`` streamed into a parquet file at `path` (millions of rows on a
    large day never whole in Python), with its plays in windows and its early events."""
    rows = stream_to_parquet(con.sql(watch_daily_partials_sql(event_day)).to_arrow_reader(), path)
    [(plays, early)] = (
        con.read_parquet(path)
        .aggregate("coalesce(sum(plays), 0), coalesce(sum(early_events), 0)")
        .fetchall()
    )
    return StagedFile(path, rows), int(plays), int(early)


def unknown_video_events(con: duckdb.DuckDBPyConnection) -> int:
    """Events of view `events` whose video is not in view `videos` (never labelled)."""
    return con.sql("SELECT count(*) FROM events e ANTI JOIN videos v USING (video_id)").fetchall()[
        0
    ][0]


def virality_sql(day0_plays: str, plays: str, followers: str) -> str:
    """ViraNova's virality as a SQL expression over three column expressions; null when
    followers is null or 0, so nothing is ever divided by zero."""
    return (
        f"CASE WHEN {followers} > 0 THEN "
        f"CAST({day0_plays} AS DOUBLE) / {followers} + CAST({plays} AS DOUBLE) / {followers} END"
    )


def labels_from_partials(con: duckdb.DuckDBPyConnection, day: str) -> pa.Table:
    """Labels of the videos in view `videos` (day D) from view `partials` (event days D..D+7)."""
    virality = virality_sql(
        "coalesce(p.day0_plays, 0)", "coalesce(p.plays, 0)", "v.creator_followers"
    )
    return con.sql(
        f"""
        WITH p AS (
            SELECT video_id,
                   sum(plays) AS plays, sum(skips) AS skips, sum(full_watches) AS full_watches,
                   sum(CAST(round(watch_time_sum * {TICKS}) AS HUGEINT)) AS ticks,
                   sum(likes) AS likes,
                   sum(comments) AS comments, sum(shares) AS shares,
                   sum(day0_plays) AS day0_plays,
                   sum(early_events) AS early_events
            FROM partials WHERE created_day = DATE '{sql_date(day)}'
            GROUP BY video_id
        )
        SELECT
            v.video_id, v.creator_id, v.created_at,
            CAST(coalesce(p.plays, 0) AS BIGINT) AS plays,
            CAST(coalesce(p.skips, 0) AS BIGINT) AS skips,
            CAST(coalesce(p.full_watches, 0) AS BIGINT) AS full_watches,
            CASE WHEN p.plays > 0 THEN CAST(p.ticks AS DOUBLE) / (p.plays * {TICKS}) END
                AS avg_watch_time_s,
            CASE WHEN p.plays > 0 THEN p.skips / p.plays END AS skip_rate,
            CAST(coalesce(p.likes, 0) AS BIGINT) AS likes,
            CAST(coalesce(p.comments, 0) AS BIGINT) AS comments,
            CAST(coalesce(p.shares, 0) AS BIGINT) AS shares,
            CASE WHEN p.plays > 0 THEN (p.likes + p.comments) / p.plays END AS engagement_rate,
            CAST(coalesce(p.day0_plays, 0) AS BIGINT) AS day0_plays,
            v.creator_followers AS followers,
            {virality} AS virality,
            CAST(coalesce(p.early_events, 0) AS BIGINT) AS early_events
        FROM videos v LEFT JOIN p USING (video_id)
        ORDER BY v.video_id
        """
    ).to_arrow_table()


CREATOR_FEATURE_COLUMNS = (
    "prior_videos",
    "days_active",
    "prior_labeled",
    *(f"prior_mean_{c}" for c in LABEL_COLUMNS),
    "followers",
)


def creator_features(con: duckdb.DuckDBPyConnection, day: str) -> pa.Table:
    """Point-in-time creator history for each video in view `videos` (created on `day`).

    Reads view `history_videos` (earlier videos, any columns incl. creator_id, created_at) and
    view `history_labels` (label rows). Only labels whose window closed before `day` began are
    used, whatever the views hold; only videos created before each video's own `created_at`
    count. `history_through` is the latest label window end used (point-in-time evidence).
    """
    means = ",\n".join(f"avg({c}) AS prior_mean_{c}" for c in LABEL_COLUMNS)
    return con.sql(
        f"""
        WITH lab AS (
            SELECT creator_id, count(*) AS prior_labeled, {means},
                   max(created_at) + INTERVAL {WINDOW_DAYS} DAY AS history_through
            FROM history_labels
            WHERE created_at + INTERVAL {WINDOW_DAYS} DAY <= TIMESTAMPTZ '{sql_date(day)}'
            GROUP BY creator_id
        ),
        prior AS (
            SELECT v.video_id, count(h.created_at) AS prior_videos,
                   min(h.created_at) AS first_seen
            FROM videos v LEFT JOIN history_videos h
              ON h.creator_id = v.creator_id AND h.created_at < v.created_at
            GROUP BY v.video_id
        )
        SELECT v.video_id, v.creator_id, v.created_at,
               prior.prior_videos,
               coalesce(date_diff('second', prior.first_seen, v.created_at) / 86400.0, 0.0)
                   AS days_active,
               coalesce(lab.prior_labeled, 0) AS prior_labeled,
               {", ".join(f"lab.prior_mean_{c}" for c in LABEL_COLUMNS)},
               v.creator_followers AS followers,
               lab.history_through
        FROM videos v
        JOIN prior USING (video_id)
        LEFT JOIN lab ON lab.creator_id = v.creator_id
        ORDER BY v.video_id
        """
    ).to_arrow_table()


LABELS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("creator_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        *((c, pa.int64()) for c in ("plays", "skips", "full_watches")),
        ("avg_watch_time_s", pa.float64()),
        ("skip_rate", pa.float64()),
        *((c, pa.int64()) for c in ("likes", "comments", "shares")),
        ("engagement_rate", pa.float64()),
        ("day0_plays", pa.int64()),
        ("followers", pa.int64()),  # creator_followers at creation; null = unknown
        ("virality", pa.float64()),
        ("early_events", pa.int64()),
    ]
)


def label_range_violations(
    con: duckdb.DuckDBPyConnection, name: str, labels: pa.Table
) -> dict[str, int]:
    """Counts of rows breaking each range rule of the labels; empty when all hold."""
    con.register(name, labels)
    rules = {
        "skips > plays": "skips > plays",
        "full_watches > plays": "full_watches > plays",
        "day0_plays > plays": "day0_plays > plays",
        "skip_rate outside [0, 1]": "skip_rate < 0 OR skip_rate > 1",
        # least() skips nulls: a counter the source does not keep breaks no rule.
        "negative count": (
            "least(plays, skips, full_watches, likes, comments, shares, day0_plays) < 0"
        ),
        "plays is null": "plays IS NULL",
        "ratio without plays": (
            "plays = 0 AND (skip_rate IS NOT NULL OR avg_watch_time_s IS NOT NULL "
            "OR engagement_rate IS NOT NULL)"
        ),
        "ratio without its counter": (
            "(skip_rate IS NOT NULL AND skips IS NULL) OR (engagement_rate IS NOT NULL "
            "AND (likes IS NULL OR comments IS NULL))"
        ),
        "virality negative or not finite": "virality < 0 OR NOT isfinite(virality)",
        "virality without followers": (
            "virality IS NOT NULL AND (followers IS NULL OR followers <= 0)"
        ),
    }
    counts = con.sql(
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE {p})" for p in rules.values())
        + f" FROM {name}"
    ).fetchall()[0]
    con.unregister(name)
    return {rule: n for rule, n in zip(rules, counts, strict=True) if n}


def point_in_time_violations(
    con: duckdb.DuckDBPyConnection, name: str, features: pa.Table, day: str
) -> int:
    """Feature rows whose label history reaches a window still open when `day` began."""
    con.register(name, features)
    n = con.sql(
        f"SELECT count(*) FROM {name} WHERE history_through > TIMESTAMPTZ '{sql_date(day)}'"
    ).fetchall()[0][0]
    con.unregister(name)
    return n
