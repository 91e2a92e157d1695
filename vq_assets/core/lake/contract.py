"""The input contract of the landing zone (DESIGN §3): schemas, rules and validation in DuckDB.

A landing day is validated in one pass: file-level problems (no `_SUCCESS` marker, an entry that
is neither read nor ignored, a file that cannot be read, a missing required column, a repeated or
mistyped column, naive timestamps without a configured zone) fail the day with an error that
names the file (see files.py), while a contract's optional columns may be absent and are read as
nulls; row-level problems, an unreadable value included, send the row to quarantine with every
rule it breaks in `reason`, plus the source file and row number so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs

from vq_assets.core.lake.files import (
    ContractError,
    LandingFile,
    LandingReader,
    check_file,
    list_landing,
    naive_zone_info,
)
from vq_assets.core.lake.files import compatible as compatible  # re-exported for sources
from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import PART_FILE, SUCCESS_MARKER, Lake, is_iso_day

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
    # Columns a landing file may leave out (the source does not keep them): read as nulls.
    optional: frozenset[str] = frozenset()


VIDEOS = TableContract("videos", VIDEOS_SCHEMA, VIDEO_RULES, unique_key="video_id")
WATCH_EVENTS = TableContract(
    "watch_events", WATCH_EVENTS_SCHEMA, EVENT_RULES, drop_exact_duplicates=True
)
CONTRACTS = {c.name: c for c in (VIDEOS, WATCH_EVENTS)}


@dataclass
class ValidatedDay:
    valid: pa.Table
    rejects: pa.Table
    files: list[str]
    rows_read: int
    duplicates_dropped: int = 0
    # Metadata entries of the landing folder that were not read (`_`/`.`-prefixed), as URIs.
    ignored: list[str] = field(default_factory=list)

    @property
    def quarantine_share(self) -> float:
        return self.rejects.num_rows / self.rows_read if self.rows_read else 0.0


def check_files(
    lake: Lake, contract: TableContract, day: str, naive_zone: str | None = None
) -> tuple[list[LandingFile], list[str]]:
    """(the day's checked parquet files, ignored metadata entries), after the marker, the folder's
    entries and every file's columns are checked; any problem fails the day naming the file."""
    directory = lake.landing_dir(contract.name, day)
    if not lake.day_complete(contract.name, day):
        raise ContractError(
            f"{contract.name} for {day} is not complete: marker "
            f"{lake.uri(directory)}/{SUCCESS_MARKER} is missing"
        )
    paths, ignored = list_landing(lake, directory)
    return [
        check_file(lake, p, contract.schema, naive_zone, contract.optional) for p in paths
    ], ignored


def register_ingested_ids(
    con: duckdb.DuckDBPyConnection, lake: Lake, name: str, asset: str, *, except_day: str
) -> None:
    """View `name` (video_id, dt) over every written partition of `asset` but `except_day`.

    Only `video_id` is scanned, file by file, so the history is never loaded whole. A day
    ingested late is thus checked against later days as well as earlier ones.
    """
    root = lake.asset_dir(asset)
    found = lake.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = sorted(
        i.path
        for i in found
        if i.base_name == PART_FILE
        and (folder := i.path.rsplit("/", 2)[-2]).startswith("dt=")
        and is_iso_day(folder[3:])
        and folder[3:] != except_day
    )
    lake.register(
        con, f"{name}_files", files, pa.schema([("video_id", pa.string())]), with_source=True
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT video_id, "
        r"regexp_extract(source_file, 'dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/', 1) AS dt "
        f"FROM {name}_files"
    )


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
    naive_timestamps_zone: str | None = None,
) -> ValidatedDay:
    """Validate one landing day of a table against its contract.

    `seen_video_ids` is a DuckDB relation (video_id, dt) of ids already ingested on other days
    (see `register_ingested_ids`); a row whose id is there is quarantined, naming that day.
    `naive_timestamps_zone` is the IANA zone of timestamps written without one; without it
    such a file fails the day.
    """
    zone = naive_zone_info(naive_timestamps_zone)
    files, ignored = check_files(lake, contract, day, zone)
    schema = contract.schema
    day_end = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    landing = LandingReader(lake, files, schema, zone)
    con.register("landing_src", landing.reader())
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE landing_typed AS SELECT * FROM landing_src")
    except duckdb.Error as e:
        if landing.error is not None:
            raise landing.error from e
        raise
    finally:
        con.unregister("landing_src")
    rows_read = con.sql("SELECT count(*) FROM landing_typed").fetchall()[0][0]
    cols = ", ".join(schema.names)
    source = "landing_typed"
    if contract.drop_exact_duplicates:
        source = (
            f"(SELECT * EXCLUDE (dup_rank) FROM (SELECT *, row_number() OVER (PARTITION BY "
            f"{cols}, load_reason ORDER BY source_file, source_row) AS dup_rank "
            "FROM landing_typed) WHERE dup_rank = 1)"
        )
    checks = ["nullif(load_reason, '')", f"nullif({_reason_sql(contract.rules, day, day_end)}, '')"]
    if contract.unique_key:
        key = contract.unique_key
        checks.append(
            f"CASE WHEN {key} IS NOT NULL AND row_number() OVER (PARTITION BY {key} "
            f"ORDER BY source_file, source_row) > 1 THEN 'duplicate {key} within the day' END"
        )
    if seen_video_ids:
        # Only the day's own ids are looked up: the join stays the size of the day.
        source = (
            f"(SELECT s.*, seen.seen_on FROM {source} s LEFT JOIN (SELECT video_id, "
            f"min(dt) AS seen_on FROM {seen_video_ids} WHERE video_id IN "
            "(SELECT video_id FROM landing_typed) GROUP BY video_id) seen "
            "ON s.video_id = seen.video_id)"
        )
        checks.append("'video_id already ingested on ' || seen_on")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE landing_checked AS "
        f"SELECT *, concat_ws('; ', {', '.join(checks)}) AS reason FROM {source}",
        {"iso": sorted(ISO_639_1)} if "$iso" in checks[1] else None,
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
        files=[f.uri for f in files],
        rows_read=rows_read,
        duplicates_dropped=rows_read - kept,
        ignored=ignored,
    )
