"""The input contract of the landing zone (DESIGN §3): schemas, rules and validation in DuckDB.

A landing day is validated in one pass: file-level problems (no `_SUCCESS` marker, a file that
cannot be read, a missing or mistyped column) fail the day with an error that names the file;
row-level problems send the row to quarantine with every rule it breaks in `reason`, plus the
source file and row number so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import SUCCESS_MARKER, Lake, LakeError

UTC_TS = pa.timestamp("us", tz="UTC")

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("creator_id", pa.string()),
        ("created_at", UTC_TS),
        ("duration_s", pa.float64()),
        ("language", pa.string()),
        ("caption", pa.string()),
        ("video_uri", pa.string()),
        ("thumbnail_uri", pa.string()),
        ("creator_followers", pa.int64()),
    ]
)

WATCH_EVENTS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("user_id", pa.string()),
        ("event_ts", UTC_TS),
        ("watch_time_s", pa.float64()),
        ("liked", pa.bool_()),
        ("commented", pa.bool_()),
        ("shared", pa.bool_()),
    ]
)

# ISO 639-1: the two-letter codes a `language` value may take.
ISO_639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu
    hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb
    lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om
    or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw
    ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh
    zu""".split()
)

# Row rules as (reason, SQL predicate that is TRUE when the row breaks the rule). Rules that
# need the partition's day use {day_start} / {day_end} placeholders.
VIDEO_RULES: list[tuple[str, str]] = [
    ("video_id is missing", "video_id IS NULL OR trim(video_id) = ''"),
    ("creator_id is missing", "creator_id IS NULL OR trim(creator_id) = ''"),
    ("created_at is missing", "created_at IS NULL"),
    (
        "created_at outside the partition's day",
        "created_at < TIMESTAMPTZ '{day_start}' OR created_at >= TIMESTAMPTZ '{day_end}'",
    ),
    ("duration_s is not > 0", "duration_s IS NULL OR isnan(duration_s) OR duration_s <= 0"),
    ("duration_s is not finite", "isinf(duration_s)"),
    ("language is not ISO-639-1", "language IS NOT NULL AND NOT list_contains($iso, language)"),
    ("creator_followers is negative", "creator_followers < 0"),
]

EVENT_RULES: list[tuple[str, str]] = [
    ("video_id is missing", "video_id IS NULL OR trim(video_id) = ''"),
    ("user_id is missing", "user_id IS NULL OR trim(user_id) = ''"),
    ("event_ts is missing", "event_ts IS NULL"),
    (
        "event_ts outside the partition's day",
        "event_ts < TIMESTAMPTZ '{day_start}' OR event_ts >= TIMESTAMPTZ '{day_end}'",
    ),
    (
        "watch_time_s is not >= 0",
        "watch_time_s IS NULL OR isnan(watch_time_s) OR watch_time_s < 0",
    ),
    ("watch_time_s is not finite", "isinf(watch_time_s)"),
]


@dataclass(frozen=True)
class TableContract:
    """One landing table: its schema, its row rules, and how duplicates are treated."""

    name: str
    schema: pa.Schema
    rules: list[tuple[str, str]]
    # Rows repeating this key within the day are quarantined (all but the first).
    unique_key: str | None = None
    # Rows equal in every column are dropped (all but the first) and counted.
    drop_exact_duplicates: bool = False


VIDEOS = TableContract("videos", VIDEOS_SCHEMA, VIDEO_RULES, unique_key="video_id")
WATCH_EVENTS = TableContract(
    "watch_events", WATCH_EVENTS_SCHEMA, EVENT_RULES, drop_exact_duplicates=True
)
CONTRACTS = {c.name: c for c in (VIDEOS, WATCH_EVENTS)}


class ContractError(LakeError):
    """A landing day breaks the contract at file level; the message names the file or marker."""


@dataclass
class ValidatedDay:
    valid: pa.Table
    rejects: pa.Table
    files: list[str]
    rows_read: int
    duplicates_dropped: int = 0

    @property
    def quarantine_share(self) -> float:
        return self.rejects.num_rows / self.rows_read if self.rows_read else 0.0


def compatible(expected: pa.DataType, found: pa.DataType) -> bool:
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    return found == expected


def check_files(lake: Lake, contract: TableContract, day: str) -> list[str]:
    """The day's parquet files, after checking the marker, readability and column types."""
    directory = lake.landing_dir(contract.name, day)
    if not lake.day_complete(contract.name, day):
        raise ContractError(
            f"{contract.name} for {day} is not complete: marker "
            f"{lake.uri(directory)}/{SUCCESS_MARKER} is missing"
        )
    files = lake.list_files(directory)
    schema = contract.schema
    for f in files:
        try:
            with lake.fs.open_input_file(f) as handle:
                found = pq.read_schema(handle)
        except (pa.ArrowInvalid, OSError) as e:
            raise ContractError(f"cannot read {lake.uri(f)}: {e}") from e
        for fld in schema:
            if fld.name not in found.names:
                raise ContractError(f"{lake.uri(f)}: required column '{fld.name}' is missing")
            if not compatible(fld.type, found.field(fld.name).type):
                raise ContractError(
                    f"{lake.uri(f)}: column '{fld.name}' has type "
                    f"{found.field(fld.name).type}, the contract says {fld.type}"
                )
    return files


def _typed_select(schema: pa.Schema) -> str:
    casts = {
        pa.string(): "VARCHAR",
        pa.float64(): "DOUBLE",
        pa.int64(): "BIGINT",
        pa.bool_(): "BOOLEAN",
        UTC_TS: "TIMESTAMPTZ",
        pa.date32(): "DATE",
    }
    return ", ".join(f"CAST({f.name} AS {casts[f.type]}) AS {f.name}" for f in schema)


def _reason_sql(rules: list[tuple[str, str]], day: str, day_end: str) -> str:
    bounds = {"day_start": sql_date(day), "day_end": sql_date(day_end)}
    parts = [
        f"CASE WHEN coalesce(({pred.format(**bounds)}), false) "
        "THEN '" + reason.replace("'", "''") + "' END"
        for reason, pred in rules
    ]
    return f"concat_ws('; ', {', '.join(parts)})"


def validate_day(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    contract: TableContract,
    day: str,
    *,
    seen_video_ids: str | None = None,
) -> ValidatedDay:
    """Validate one landing day of a table against its contract.

    `seen_video_ids` is a DuckDB relation name holding `video_id` values already ingested on
    earlier days; a video id seen there is quarantined (ids are unique across all days).
    """
    files = check_files(lake, contract, day)
    schema = contract.schema
    day_end = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    lake.register(con, "landing_src", files, schema, with_source=True)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE landing_typed AS "
        f"SELECT {_typed_select(schema)}, source_file, source_row FROM landing_src"
    )
    rows_read = con.sql("SELECT count(*) FROM landing_typed").fetchall()[0][0]
    cols = ", ".join(schema.names)
    source = "landing_typed"
    if contract.drop_exact_duplicates:
        source = (
            f"(SELECT * EXCLUDE (dup_rank) FROM (SELECT *, row_number() OVER (PARTITION BY "
            f"{cols} ORDER BY source_file, source_row) AS dup_rank FROM landing_typed) "
            "WHERE dup_rank = 1)"
        )
    checks = [f"nullif({_reason_sql(contract.rules, day, day_end)}, '')"]
    if contract.unique_key:
        key = contract.unique_key
        checks.append(
            f"CASE WHEN {key} IS NOT NULL AND row_number() OVER (PARTITION BY {key} "
            f"ORDER BY source_file, source_row) > 1 THEN 'duplicate {key} within the day' END"
        )
    if seen_video_ids:
        checks.append(
            f"CASE WHEN video_id IN (SELECT video_id FROM {seen_video_ids}) "
            "THEN 'video_id already ingested on an earlier day' END"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE landing_checked AS "
        f"SELECT *, concat_ws('; ', {', '.join(checks)}) AS reason FROM {source}",
        {"iso": sorted(ISO_639_1)} if "$iso" in checks[0] else None,
    )
    kept = con.sql("SELECT count(*) FROM landing_checked").fetchall()[0][0]
    valid = con.sql(
        f"SELECT {cols} FROM landing_checked WHERE reason = '' ORDER BY source_file, source_row"
    ).to_arrow_table()
    rejects = con.sql(
        f"SELECT {cols}, reason, source_file, source_row FROM landing_checked "
        "WHERE reason <> '' ORDER BY source_file, source_row"
    ).to_arrow_table()
    for name in ("landing_typed", "landing_checked"):
        con.execute(f"DROP TABLE {name}")
    return ValidatedDay(
        valid=valid.cast(schema),
        rejects=rejects,
        files=[lake.uri(f) for f in files],
        rows_read=rows_read,
        duplicates_dropped=rows_read - kept,
    )
