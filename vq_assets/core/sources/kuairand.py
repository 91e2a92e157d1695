"""Import KuaiRand-Pure (Gao et al., CIKM 2022; CC BY-SA 4.0) into the landing zone.

Source files (the partial copy described in its README):

- `video_features_basic_pure.csv`: one row per video (official file) -> `videos` and
  `video_extras`, partitioned by upload day;
- `log_standard_pure_events_*.parquet`: raw interaction rows -> `watch_events`, by UTC day;
- `item_features_basic_plus_statistic.parquet`: per-video statistics over about one month ->
  `video_stats_month`, a label source with the `LABELS_SCHEMA` columns plus `window`.

Landing layout written here (every folder gets its `_SUCCESS` marker after its data):

    <lake>/landing/videos/dt=YYYY-MM-DD/part-0.parquet        contract schema (DESIGN §3)
    <lake>/landing/video_extras/dt=YYYY-MM-DD/part-0.parquet  VIDEO_EXTRAS_SCHEMA
    <lake>/landing/watch_events/dt=YYYY-MM-DD/part-0.parquet  contract schema
    <lake>/landing/video_stats_month/part-0.parquet           VIDEO_STATS_MONTH_SCHEMA

The source's own structure is checked first; anything unexpected fails with
`KuaiRandFormatError` naming the file and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA, compatible
from vq_assets.core.lake.sql import connect, sql_date
from vq_assets.core.lake.store import Lake

VIDEOS_CSV = "video_features_basic_pure.csv"
STATS_PARQUET = "item_features_basic_plus_statistic.parquet"
EVENTS_GLOB = "log_standard_pure_events_*.parquet"

EXTRAS_TABLE = "video_extras"
STATS_TABLE = "video_stats_month"
STATS_WINDOW = "about one month after upload, not 7 days"

# Columns read from each source, with the type they must have (integer and float columns may
# come as any integer / floating width; see contract.compatible).
CSV_COLUMNS = {
    "video_id": pa.int64(),
    "author_id": pa.int64(),
    "video_type": pa.string(),
    "upload_dt": pa.date32(),
    "upload_type": pa.string(),
    "video_duration": pa.float64(),
    "server_width": pa.float64(),
    "server_height": pa.float64(),
    "music_id": pa.int64(),
    "music_type": pa.float64(),
    "tag": pa.string(),
}
EVENT_COLUMNS = {
    "user_id": pa.int64(),
    "video_id": pa.int64(),
    "time_ms": pa.int64(),
    "play_time_ms": pa.int64(),
    "is_like": pa.int64(),
    "is_comment": pa.int64(),
}
# KuaiRand's share action is `is_forward` (forwarding a video to others); `shared` stays null
# for a slice without it.
SHARE_COLUMN = "is_forward"
STATS_COLUMNS = {
    "video_id": pa.int64(),
    "counts": pa.int64(),
    **{
        c: pa.float64()
        for c in (
            "play_cnt",
            "play_duration",
            "complete_play_cnt",
            "short_time_play_cnt",
            "like_cnt",
            "comment_cnt",
            "share_cnt",
        )
    },
}

# Creation-time attributes with no column in the contract; features may join them on video_id.
VIDEO_EXTRAS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("video_type", pa.string()),  # NORMAL, AD, UNKNOWN
        ("upload_type", pa.string()),  # LongImport, Web, ShortImport, Kmovie, ...
        ("tag", pa.string()),  # comma-separated tag ids, e.g. "39,68"; null when unknown
        ("music_id", pa.string()),
        ("music_type", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
    ]
)

VIDEO_STATS_MONTH_SCHEMA = LABELS_SCHEMA.append(pa.field("window", pa.string())).append(
    pa.field("stat_records", pa.int64())  # KuaiRand `counts`: statistic records (day x scenario)
)

# Unix milliseconds between 2000 and 2100: a `time_ms` in seconds or microseconds falls outside.
MS_RANGE = (946_684_800_000, 4_102_444_800_000)


class KuaiRandFormatError(ValueError):
    """A KuaiRand source file is not shaped as expected; the message names file and column."""


@dataclass(frozen=True)
class ImportSummary:
    videos: int
    creators: int
    video_days: tuple[str, ...]
    # Empty video_duration (picture posts and a few others): quarantined by the videos contract.
    videos_without_duration: int
    event_rows: int  # rows in the event files
    impressions_without_play: int  # play_time_ms = 0: shown, never played; not a watch event
    watch_events: int  # rows written to watch_events
    duplicate_events: int  # exact duplicates among them (the contract drops them on ingest)
    events_unknown_video: int  # watch events whose video is not in the CSV (kept, never labelled)
    # UTC days. The source cuts its days near 15:00 UTC: the first and last are partial.
    event_days: tuple[str, ...]
    videos_with_stats: int


def _fail(path: Path, column: str, problem: str) -> KuaiRandFormatError:
    return KuaiRandFormatError(f"{path}: column '{column}' {problem}")


def _check_schema(path: Path, found: pa.Schema, expected: dict[str, pa.DataType]) -> None:
    for name, typ in expected.items():
        if name not in found.names:
            raise _fail(path, name, "is missing")
        if not compatible(typ, found.field(name).type):
            raise _fail(path, name, f"has type {found.field(name).type}, expected {typ}")


def _no_nulls(path: Path, table: pa.Table, columns: list[str]) -> None:
    for c in columns:
        if n := table.column(c).null_count:
            raise _fail(path, c, f"has {n} empty values")


def _read_parquet(
    path: Path, expected: dict[str, pa.DataType], optional: tuple[str, ...] = ()
) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        _check_schema(path, schema, expected)
        present = [c for c in optional if c in schema.names]
        return pq.read_table(path, columns=[*expected, *present])
    except (pa.ArrowInvalid, OSError) as e:
        raise KuaiRandFormatError(f"cannot read {path}: {e}") from e


def _read_videos(path: Path) -> pa.Table:
    # Read as text, then convert column by column, so that a bad value names its column.
    try:
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        for name in CSV_COLUMNS:
            if name not in header:
                raise _fail(path, name, "is missing")
        raw = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(CSV_COLUMNS, pa.string()),
                include_columns=list(CSV_COLUMNS),
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise KuaiRandFormatError(f"cannot read {path}: {e}") from e
    columns = {}
    for name, typ in CSV_COLUMNS.items():
        try:
            columns[name] = pc.cast(raw.column(name), typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise _fail(path, name, f"cannot be read as {typ}: {e}") from e
    table = pa.table(columns)
    _no_nulls(path, table, ["video_id", "author_id", "upload_dt"])
    if pc.count_distinct(table.column("video_id")).as_py() != table.num_rows:
        raise _fail(path, "video_id", "repeats a video id")
    duration = table.column("video_duration")
    if pc.any(pc.less_equal(duration, 0)).as_py():
        raise _fail(path, "video_duration", "has values <= 0")
    # The README says milliseconds; a median under one second would mean seconds.
    median = pc.approximate_median(duration).as_py()
    if median is not None and median < 1000:
        raise _fail(path, "video_duration", f"does not look like ms (median {median})")
    return table


def _read_events(paths: list[Path]) -> pa.Table:
    schema = pa.schema([*EVENT_COLUMNS.items(), (SHARE_COLUMN, pa.int64())])
    tables = []
    for path in paths:
        t = _read_parquet(path, EVENT_COLUMNS, optional=(SHARE_COLUMN,))
        _no_nulls(path, t, ["user_id", "video_id", "time_ms", "play_time_ms"])
        lo, hi = (v.as_py() for v in pc.min_max(t.column("time_ms")).values())
        if t.num_rows and not (MS_RANGE[0] <= lo and hi < MS_RANGE[1]):
            raise _fail(path, "time_ms", f"is not unix milliseconds (range {lo}..{hi})")
        if pc.any(pc.less(t.column("play_time_ms"), 0)).as_py():
            raise _fail(path, "play_time_ms", "has negative values")
        if SHARE_COLUMN not in t.column_names:
            t = t.append_column(SHARE_COLUMN, pa.nulls(t.num_rows, pa.int64()))
        tables.append(t.cast(schema))
    return pa.concat_tables(tables)


def _read_stats(path: Path) -> pa.Table:
    t = _read_parquet(path, STATS_COLUMNS)
    _no_nulls(path, t, list(STATS_COLUMNS))
    if pc.count_distinct(t.column("video_id")).as_py() != t.num_rows:
        raise _fail(path, "video_id", "repeats a video id")
    if pc.any(pc.less_equal(t.column("counts"), 0)).as_py():
        raise _fail(path, "counts", "has values <= 0")
    # Each *_cnt is an average per record, so *_cnt x counts must be a whole number.
    for c in ("play_cnt", "complete_play_cnt", "short_time_play_cnt", "like_cnt", "comment_cnt"):
        total = pc.multiply(t.column(c), pc.cast(t.column("counts"), pa.float64()))
        if pc.max(pc.abs(pc.subtract(total, pc.round(total)))).as_py() > 1e-3:
            raise _fail(path, c, "x counts is not a whole number: not an average per record?")
    return t


def import_kuairand(src: Path, lake: Lake) -> ImportSummary:
    """Convert the KuaiRand-Pure files in `src` into landing days of `lake`."""
    src = Path(src)
    videos_csv, stats_path = src / VIDEOS_CSV, src / STATS_PARQUET
    event_paths = sorted(src.glob(EVENTS_GLOB))
    for p in (videos_csv, stats_path):
        if not p.is_file():
            raise KuaiRandFormatError(f"{p}: file is missing")
    if not event_paths:
        raise KuaiRandFormatError(f"{src}: no event files {EVENTS_GLOB}")
    with connect() as con:
        con.register("kr_csv", _read_videos(videos_csv))
        con.register("kr_log", _read_events(event_paths))
        con.register("kr_stats", _read_stats(stats_path))
        _check_stats_units(con, stats_path)
        _build(con, stats_path)
        return _write(con, lake)


def _check_stats_units(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """play_duration is ms per the README: mean watch / video length is then of order 1 (it is
    about 0.4 on the full data); in seconds it would be ~1000 times smaller."""
    ratio = con.sql(
        "SELECT median(s.play_duration / s.play_cnt / v.video_duration) "
        "FROM kr_stats s JOIN kr_csv v USING (video_id) WHERE s.play_cnt > 0"
    ).fetchall()[0][0]
    if ratio is not None and not 0.01 <= ratio <= 10:
        raise _fail(path, "play_duration", f"is not in ms: median watch/duration is {ratio:.4g}")


def _build(con: duckdb.DuckDBPyConnection, stats_path: Path) -> None:
    """Temp tables kr_videos, kr_events and kr_stats_month in landing form."""
    # created_at: the source gives only the upload date, so 00:00 UTC of upload_dt. The start of
    # the day keeps each video in its own day's partition; it makes the exact window
    # [c, c + 7 d) the same as the 7 calendar days of daily stats; and same-day videos of a
    # creator tie, so creator features (strictly earlier videos) never count a sibling that may
    # have been uploaded later that day.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE kr_videos AS
        SELECT CAST(v.video_id AS VARCHAR) AS video_id,
               CAST(v.author_id AS VARCHAR) AS creator_id,
               CAST(v.upload_dt AS TIMESTAMPTZ) AS created_at,
               v.video_duration / 1000.0 AS duration_s,
               CAST(NULL AS VARCHAR) AS language,
               CAST(NULL AS VARCHAR) AS caption,
               CAST(NULL AS VARCHAR) AS video_uri,
               CAST(NULL AS VARCHAR) AS thumbnail_uri,
               CAST(NULL AS BIGINT) AS creator_followers,
               v.video_type, v.upload_type, v.tag,
               CAST(v.music_id AS VARCHAR) AS music_id,
               CAST(v.music_type AS BIGINT) AS music_type,
               CAST(v.server_width AS BIGINT) AS width,
               CAST(v.server_height AS BIGINT) AS height
        FROM kr_csv v
        """
    )
    # A log row is an impression; only rows with play time are plays, as in the statistics
    # (play_cnt counts plays, show_cnt impressions). Flags are 0/1 integers.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE kr_events AS
        SELECT CAST(video_id AS VARCHAR) AS video_id,
               CAST(user_id AS VARCHAR) AS user_id,
               CAST(epoch_ms(time_ms) AS TIMESTAMPTZ) AS event_ts,
               play_time_ms / 1000.0 AS watch_time_s,
               is_like <> 0 AS liked,
               is_comment <> 0 AS commented,
               is_forward <> 0 AS shared
        FROM kr_log WHERE play_time_ms > 0
        """
    )
    unknown = con.sql(
        "SELECT count(*), min(video_id) FROM kr_stats ANTI JOIN kr_csv USING (video_id)"
    ).fetchall()[0]
    if unknown[0]:
        raise _fail(
            stats_path,
            "video_id",
            f"has {unknown[0]} videos not in {VIDEOS_CSV} (e.g. {unknown[1]})",
        )
    # README derivation: total = average per record x counts; ratios from the totals.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE kr_stats_month AS
        WITH t AS (
            SELECT CAST(video_id AS VARCHAR) AS video_id, counts,
                   CAST(round(play_cnt * counts) AS BIGINT) AS plays,
                   CAST(round(short_time_play_cnt * counts) AS BIGINT) AS skips,
                   CAST(round(complete_play_cnt * counts) AS BIGINT) AS full_watches,
                   CAST(round(like_cnt * counts) AS BIGINT) AS likes,
                   CAST(round(comment_cnt * counts) AS BIGINT) AS comments,
                   CAST(round(share_cnt * counts) AS BIGINT) AS shares,
                   CASE WHEN play_cnt > 0 THEN play_duration / play_cnt / 1000.0 END
                       AS avg_watch_time_s
            FROM kr_stats
        )
        SELECT v.video_id, v.creator_id, v.created_at,
               t.plays, t.skips, t.full_watches, t.avg_watch_time_s,
               CASE WHEN t.plays > 0 THEN t.skips / t.plays END AS skip_rate,
               t.likes, t.comments, t.shares,
               CASE WHEN t.plays > 0 THEN (t.likes + t.comments) / t.plays END
                   AS engagement_rate,
               -- A month's totals have no day 0: day-0 plays and virality are unknown.
               CAST(NULL AS BIGINT) AS day0_plays,
               v.creator_followers AS followers,
               CAST(NULL AS DOUBLE) AS virality,
               0 AS early_events,
               '{STATS_WINDOW}' AS "window",
               t.counts AS stat_records
        FROM t JOIN kr_videos v USING (video_id)
        ORDER BY v.video_id
        """
    )


def _write(con: duckdb.DuckDBPyConnection, lake: Lake) -> ImportSummary:
    def days(table: str, column: str) -> list[str]:
        rows = con.sql(f"SELECT DISTINCT CAST({column} AS DATE) FROM {table} ORDER BY 1")
        return [d.isoformat() for (d,) in rows.fetchall()]

    def day_rows(table: str, column: str, day: str, schema: pa.Schema, order: str) -> pa.Table:
        return (
            con.sql(
                f"SELECT {', '.join(schema.names)} FROM {table} "
                f"WHERE CAST({column} AS DATE) = DATE '{sql_date(day)}' ORDER BY {order}"
            )
            .to_arrow_table()
            .cast(schema)
        )

    video_days = days("kr_videos", "created_at")
    for day in video_days:
        for table, schema in (("videos", VIDEOS_SCHEMA), (EXTRAS_TABLE, VIDEO_EXTRAS_SCHEMA)):
            directory = lake.landing_dir(table, day)
            lake.write_table(
                directory, day_rows("kr_videos", "created_at", day, schema, "video_id")
            )
            lake.write_marker(directory)
    event_days = days("kr_events", "event_ts")
    for day in event_days:
        directory = lake.landing_dir("watch_events", day)
        rows = day_rows("kr_events", "event_ts", day, WATCH_EVENTS_SCHEMA, "event_ts, video_id")
        lake.write_table(directory, rows)
        lake.write_marker(directory)
    stats_dir = lake.path("landing", STATS_TABLE)
    stats = con.sql("SELECT * FROM kr_stats_month").to_arrow_table()
    lake.write_table(stats_dir, stats.cast(VIDEO_STATS_MONTH_SCHEMA))
    lake.write_marker(stats_dir)

    def count(q: str) -> int:
        return con.sql(q).fetchall()[0][0]

    return ImportSummary(
        videos=count("SELECT count(*) FROM kr_videos"),
        creators=count("SELECT count(DISTINCT creator_id) FROM kr_videos"),
        video_days=tuple(video_days),
        videos_without_duration=count("SELECT count(*) FROM kr_videos WHERE duration_s IS NULL"),
        event_rows=count("SELECT count(*) FROM kr_log"),
        impressions_without_play=count("SELECT count(*) FROM kr_log WHERE play_time_ms = 0"),
        watch_events=count("SELECT count(*) FROM kr_events"),
        duplicate_events=count(
            "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM kr_events)) "
            "FROM kr_events"
        ),
        events_unknown_video=count(
            "SELECT count(*) FROM kr_events ANTI JOIN kr_videos USING (video_id)"
        ),
        event_days=tuple(event_days),
        videos_with_stats=stats.num_rows,
    )
