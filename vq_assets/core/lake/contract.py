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
    ROW_BITS,
    ROW_MASK,
    ContractError,
    LandingFile,
    LandingReader,
    check_file,
    list_landing,
    naive_zone_info,
)
from vq_assets.core.lake.files import compatible as compatible  # re-exported for sources
from vq_assets.core.lake.sql import sql_date
from vq_assets.core.lake.store import (
    PART_FILE,
    SUCCESS_MARKER,
    Lake,
    StagedFile,
    is_iso_day,
    stream_to_parquet,
)

UTC_TS = pa.timestamp("us", tz="UTC")
# Rows per slice of the hash range that the exact-duplicate search aggregates at a time: each
# slice's hash table (~16M groups) stays well inside a few GB of DuckDB memory.
HASH_PASS_ROWS = 16_000_000

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
    # The valid rows: a table, or, when `validate_day` was given `stage`, the parquet file they
    # were streamed to (the day is never whole in Python), for `Lake.publish_staged`.
    valid: pa.Table | StagedFile
    rejects: pa.Table
    files: list[str]
    rows_read: int
    duplicates_dropped: int = 0
    # Metadata entries of the landing folder that were not read (`_`/`.`-prefixed), as URIs.
    ignored: list[str] = field(default_factory=list)

    @property
    def rows_valid(self) -> int:
        return self.valid.num_rows

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


# The codes as a SQL list literal for `$iso`: constants of this module, so they go into the text
# and the checks are one plain query that needs no parameters wherever it is used.
_ISO_SQL = "[" + ", ".join(f"'{c}'" for c in sorted(ISO_639_1)) + "]"


def _reason_sql(rules: list[tuple[str, str]], day: str, day_end: str) -> str:
    bounds = {"day_start": sql_date(day), "day_end": sql_date(day_end)}
    parts = [
        f"CASE WHEN coalesce(({pred.format(**bounds).replace('$iso', _ISO_SQL)}), false) "
        "THEN '" + reason.replace("'", "''") + "' END"
        for reason, pred in rules
    ]
    return f"concat_ws('; ', {', '.join(parts)})"


def _drop_exact_duplicates(con: duckdb.DuckDBPyConnection, key: str, rows: int) -> int:
    """Delete from `landing_typed` each row equal in every `key` column to an earlier one (by
    `rid`); return how many went.

    Rows are first grouped by `h`, a 64-bit hash of the key stored when the day was loaded, one
    slice of the hash range per HASH_PASS_ROWS rows at a time, so each aggregate reads one
    narrow column and stays well inside DuckDB's memory limit. Only rows whose hash repeats
    (the duplicates, and rare collisions) are then compared exactly, so the whole day is never
    sorted. Values that compare equal hash equally (NULLs, NaNs, 0.0 and -0.0 included): the
    result is that of a window over the whole day.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE dup_hashes (h UBIGINT)")
    passes = max(1, -(-rows // HASH_PASS_ROWS))
    for k in range(passes):
        con.execute(
            "INSERT INTO dup_hashes SELECT h FROM landing_typed "
            f"WHERE h % {passes} = {k} GROUP BY h HAVING count(*) > 1"
        )
    dropped = 0
    if con.sql("SELECT count(*) FROM dup_hashes").fetchall()[0][0]:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE dup_rows AS SELECT rid FROM (SELECT rid, row_number() "
            f"OVER (PARTITION BY {key} ORDER BY rid) AS n FROM landing_typed "
            "WHERE h IN (SELECT h FROM dup_hashes)) WHERE n > 1"
        )
        # Deleting keeps the remaining rows in their order (a join would not).
        dropped = con.execute(
            "DELETE FROM landing_typed WHERE rid IN (SELECT rid FROM dup_rows)"
        ).fetchall()[0][0]
        con.execute("DROP TABLE dup_rows")
    con.execute("DROP TABLE dup_hashes")
    return dropped


def validate_day(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    contract: TableContract,
    day: str,
    *,
    seen_video_ids: str | None = None,
    naive_timestamps_zone: str | None = None,
    stage: str | None = None,
) -> ValidatedDay:
    """Validate one landing day of a table against its contract.

    `seen_video_ids` is a DuckDB relation (video_id, dt) of ids already ingested on other days
    (see `register_ingested_ids`); a row whose id is there is quarantined, naming that day.
    `naive_timestamps_zone` is the IANA zone of timestamps written without one; without it
    such a file fails the day. `stage` is a local path (`Lake.staging_path`): the valid rows are
    streamed from DuckDB there as the partition's parquet file, one row group at a time, and
    `valid` is a `StagedFile`, so a large day stays inside DuckDB's memory limit; without it
    `valid` is an Arrow table.
    """
    zone = naive_zone_info(naive_timestamps_zone)
    files, ignored = check_files(lake, contract, day, zone)
    schema = contract.schema
    day_end = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    landing = LandingReader(lake, files, schema, zone)
    cols = ", ".join(schema.names)
    dup_key = f"{cols}, load_reason"
    hashed = f", hash({dup_key}) AS h" if contract.drop_exact_duplicates else ""
    con.register("landing_src", landing.reader())
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE landing_typed AS SELECT *{hashed} FROM landing_src"
        )
    except duckdb.Error as e:
        if landing.error is not None:
            raise landing.error from e
        raise
    finally:
        con.unregister("landing_src")
    rows_read = con.sql("SELECT count(*) FROM landing_typed").fetchall()[0][0]
    duplicates = (
        _drop_exact_duplicates(con, dup_key, rows_read) if contract.drop_exact_duplicates else 0
    )
    source = "landing_typed"
    checks = ["nullif(load_reason, '')", f"nullif({_reason_sql(contract.rules, day, day_end)}, '')"]
    if contract.unique_key:
        key = contract.unique_key
        checks.append(
            f"CASE WHEN {key} IS NOT NULL AND row_number() OVER (PARTITION BY {key} "
            f"ORDER BY rid) > 1 THEN 'duplicate {key} within the day' END"
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
    checked = f"SELECT *, concat_ws('; ', {', '.join(checks)}) AS reason FROM {source}"
    if contract.unique_key or seen_video_ids:
        # Windows and joins do not keep row order: materialise, then sort by rid.
        con.execute(f"CREATE OR REPLACE TEMP TABLE landing_checked AS {checked}")
        checked, order = "landing_checked", " ORDER BY rid"
    else:
        # Row-local rules only: a filtered scan of one table keeps its order (guaranteed by
        # DuckDB for SELECT, WHERE and COPY), so the day is written in landing order, unsorted.
        checked, order = f"({checked})", ""
    valid_sql = f"SELECT {cols} FROM {checked} WHERE reason = ''{order}"
    valid: pa.Table | StagedFile
    if stage is not None:
        rows = stream_to_parquet(con.sql(valid_sql).to_arrow_reader(), stage, schema)
        valid = StagedFile(stage, rows)
    else:
        valid = con.sql(valid_sql).to_arrow_table().cast(schema)
    rejects = con.sql(
        f"SELECT {cols}, reason, CAST($files AS VARCHAR[])[(rid >> {ROW_BITS}) + 1] AS "
        f"source_file, rid & {ROW_MASK} AS source_row FROM {checked} WHERE reason <> '' "
        "ORDER BY rid",
        params={"files": [f.uri for f in files]},
    ).to_arrow_table()
    con.execute("DROP TABLE IF EXISTS landing_checked")
    con.execute("DROP TABLE landing_typed")
    return ValidatedDay(
        valid=valid,
        rejects=rejects,
        files=[f.uri for f in files],
        rows_read=rows_read,
        duplicates_dropped=duplicates,
        ignored=ignored,
    )
