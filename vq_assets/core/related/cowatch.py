"""`cowatch_pairs`: videos watched by the same user close together in time (DESIGN §11).

One event day at a time, in one scan of its events:

- a view counts when `watch_time_s >= 3 s` (a skip says nothing about what a user likes);
- each user's first `max_videos_per_user` qualifying views of the day are kept, so a bot or a
  binge-watcher adds at most N(N-1)/2 pairs, not a quadratic blow-up that dominates the counts;
- two kept views of different videos by one user form a co-occurrence when their `event_ts`
  are at most `window_minutes` apart (inclusive).

A row per unordered pair, `video_a < video_b`: `users` (distinct users who co-watched it, the
pair's weight), `co_views` (co-occurring view pairs, re-watches included) and `first_ts`, the
moment the pair was first observable (the later view of its earliest co-occurrence). Training
with a cutoff takes only pairs with `first_ts` before it (`pair_index(before=...)`).

Known edge: a co-occurrence that straddles midnight UTC is lost, since each event day is
scanned alone (the price of one scan per partition; at a 30-minute window it is a small share).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.windows import SKIP_SECONDS
from vq_assets.core.lake.contract import UTC_TS
from vq_assets.core.lake.sql import sql_date

# A view shorter than the `skips` threshold (DESIGN §4) says nothing about what a user likes.
MIN_WATCH_S = SKIP_SECONDS
DEFAULT_WINDOW_MINUTES = 30
DEFAULT_MAX_VIDEOS_PER_USER = 200

COWATCH_SCHEMA = pa.schema(
    [
        ("event_day", pa.date32()),
        ("video_a", pa.string()),
        ("video_b", pa.string()),
        ("users", pa.int64()),
        ("co_views", pa.int64()),
        ("first_ts", UTC_TS),
    ]
)


def _positive_int(name: str, value: int) -> int:
    # These go into SQL text: only a genuine positive integer may get there.
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def cowatch_sql(event_day: str, window_minutes: int, max_videos_per_user: int) -> str:
    """The query behind `cowatch_pairs`, over view `events` (exposed so tests can EXPLAIN it)."""
    window = _positive_int("window_minutes", window_minutes)
    cap = _positive_int("max_videos_per_user", max_videos_per_user)
    start = sql_date(event_day)
    end = sql_date((dt.date.fromisoformat(start) + dt.timedelta(days=1)).isoformat())
    return f"""
        WITH views AS MATERIALIZED (  -- the one scan of the day; the self-join reads this
            SELECT user_id, video_id, event_ts
            FROM events
            WHERE event_ts >= TIMESTAMPTZ '{start}' AND event_ts < TIMESTAMPTZ '{end}'
              AND watch_time_s >= {MIN_WATCH_S}
              AND user_id IS NOT NULL AND video_id IS NOT NULL
            QUALIFY row_number() OVER (
                PARTITION BY user_id ORDER BY event_ts, video_id) <= {cap}
        ),
        co AS (
            SELECT a.video_id AS video_a, b.video_id AS video_b, a.user_id,
                   greatest(a.event_ts, b.event_ts) AS seen_ts
            FROM views a JOIN views b
              ON a.user_id = b.user_id
             AND a.video_id < b.video_id  -- canonical order; a video never pairs with itself
             AND b.event_ts >= a.event_ts - INTERVAL {window} MINUTE
             AND b.event_ts <= a.event_ts + INTERVAL {window} MINUTE
        )
        SELECT DATE '{start}' AS event_day, video_a, video_b,
               count(DISTINCT user_id) AS users, count(*) AS co_views,
               min(seen_ts) AS first_ts
        FROM co
        GROUP BY video_a, video_b
        ORDER BY video_a, video_b
        """


def cowatch_pairs(
    con: duckdb.DuckDBPyConnection,
    event_day: str,
    *,
    window_minutes: int = DEFAULT_WINDOW_MINUTES,
    max_videos_per_user: int = DEFAULT_MAX_VIDEOS_PER_USER,
) -> pa.Table:
    """Co-watch pairs of `event_day` (COWATCH_SCHEMA) from DuckDB view `events`
    (WATCH_EVENTS_SCHEMA).

    Events outside `event_day` are ignored, so the view may hold more than the day. The cap is
    on views, first by `event_ts`: a user's first N qualifying views (and so at most N videos);
    re-watches count against it, which is what bounds a looping bot's work.
    """
    query = cowatch_sql(event_day, window_minutes, max_videos_per_user)
    return con.sql(query).to_arrow_table().cast(COWATCH_SCHEMA)


class PairIndex(NamedTuple):
    """Co-watch pairs as row indices into a content matrix, ready for `train_cdml`."""

    idx_a: np.ndarray  # [p] int64
    idx_b: np.ndarray  # [p] int64
    weight: np.ndarray  # [p] float32: distinct co-watching users, summed over event days
    unknown: int  # pairs dropped because a side has no row (no content vector, or not listed)


def pair_index(
    pairs: pa.Table, video_ids: Sequence[str], *, before: dt.datetime | None = None
) -> PairIndex:
    """Sum `cowatch_pairs` rows of several event days per pair and map them to rows of
    `video_ids` (the videos that have a content vector).

    `before` keeps only pairs first observed before it: the point-in-time rule for a model
    trained at that moment. A day partition's counts cover its whole day, so the cut is exact
    at a day boundary, which is where retraining cuts.
    """
    if before is not None:
        pairs = pairs.filter(pc.less(pairs.column("first_ts"), pa.scalar(before, UTC_TS)))
    summed = pairs.group_by(["video_a", "video_b"]).aggregate([("users", "sum")])
    position = {v: i for i, v in enumerate(video_ids)}
    a = [position.get(v, -1) for v in summed.column("video_a").to_pylist()]
    b = [position.get(v, -1) for v in summed.column("video_b").to_pylist()]
    idx_a, idx_b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    weight = summed.column("users_sum").to_numpy().astype(np.float32)
    known = (idx_a >= 0) & (idx_b >= 0)
    # Sorted, so the same pairs give the same arrays whatever order the partitions came in.
    order = np.lexsort((idx_b[known], idx_a[known]))
    return PairIndex(
        idx_a[known][order], idx_b[known][order], weight[known][order], int((~known).sum())
    )
