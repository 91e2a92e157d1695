"""File-level side of the input contract: which landing entries are read, which are ignored, and a
reader that types every row or says, per row, why a value cannot be kept.

A landing day is either read whole or failed with the entry named: an entry that is neither a
parquet file to read nor a metadata name to ignore (a directory, another extension, a hidden
parquet file) fails the day, so no rows are lost without anyone being told.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vq_assets.core.lake.store import SUCCESS_MARKER, Lake, LakeError

# Spark/Hadoop convention: names starting with these are metadata (`_SUCCESS`, `_temporary/`,
# `.part-0.parquet.crc`, our own `.part-0.parquet.<id>.tmp`), never data.
METADATA_PREFIXES = ("_", ".")
PARQUET_SUFFIX = ".parquet"  # compared case-insensitively: `X.PARQUET` is read
INT64_MAX = 2**63 - 1
# A landing row's id (`rid`): its file's index in the day's sorted file list above ROW_BITS, its
# row in that file below. One int64 then orders rows by (file, row), the order `source_file`,
# `source_row` gave, at 8 bytes a row instead of a path string per row.
ROW_BITS = 40
ROW_MASK = (1 << ROW_BITS) - 1
READ_BUFFER_BYTES = 4 << 20


class ContractError(LakeError):
    """A landing day breaks the contract at file level; the message names the file or marker."""


@dataclass(frozen=True)
class LandingFile:
    path: str  # inside the lake's filesystem
    uri: str  # as users see it; the `source_file` of its rows
    naive_columns: tuple[str, ...] = ()  # timestamp columns written without a time zone
    # Optional contract columns the file does not have: read as all null (see `check_file`).
    missing_columns: tuple[str, ...] = ()


def naive_zone_info(zone: str | None) -> str | None:
    """`zone` (config `naive_timestamps_zone`) checked to be an IANA zone name."""
    if zone is None:
        return None
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(
            f"naive_timestamps_zone must be an IANA time zone name such as 'Europe/Berlin' "
            f"or 'UTC'; got {zone!r}"
        ) from e
    return zone


def list_landing(lake: Lake, directory: str) -> tuple[list[str], list[str]]:
    """(parquet files to read, metadata entries ignored as URIs) of one landing folder.

    Read: regular files named `*.parquet` (any case) without a metadata prefix. Ignored: the
    `_SUCCESS` marker (not reported) and other `_`/`.`-prefixed entries that are not named
    `*.parquet` (reported). Anything else fails the day, every offender named at once.
    """
    entries = lake.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    files: list[str] = []
    ignored: list[str] = []
    refused: list[str] = []
    for e in sorted(entries, key=lambda i: i.base_name):
        name, uri = e.base_name, lake.uri(e.path)
        parquet_name = name.lower().endswith(PARQUET_SUFFIX)
        if name.startswith(METADATA_PREFIXES):
            if parquet_name:
                # Rows hidden behind a metadata name: reading breaks the convention, ignoring
                # loses them; the operator renames or removes the file.
                refused.append(f"{uri} (parquet named like metadata: rename or remove it)")
            elif name != SUCCESS_MARKER:
                ignored.append(uri)
        elif parquet_name and e.type == pafs.FileType.File:
            files.append(e.path)
        elif e.type == pafs.FileType.Directory:
            refused.append(f"{uri} (a directory: nested files are not read)")
        elif e.type != pafs.FileType.File:
            refused.append(f"{uri} (not a regular file)")
        else:
            refused.append(f"{uri} (not a .parquet file)")
    if refused:
        raise ContractError(
            f"{lake.uri(directory)}: entries that are neither read nor ignored: "
            + "; ".join(refused)
        )
    return files, ignored


def compatible(expected: pa.DataType, found: pa.DataType) -> bool:
    """Whether a column of type `found` can be read as the contract's `expected` type."""
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(found) or pa.types.is_integer(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found)
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    return found == expected


def check_file(
    lake: Lake,
    path: str,
    schema: pa.Schema,
    naive_zone: str | None,
    optional: frozenset[str] = frozenset(),
) -> LandingFile:
    """One file's footer against `schema`: readable, every column once and of a compatible type,
    timestamps with a time zone unless `naive_zone` says where naive ones were written.

    A column named in `optional` may be absent (the source does not keep it) or written with
    Arrow's null type (all values unknown): its rows read it as typed nulls. Every other column
    of `schema` is required.
    """
    uri = lake.uri(path)
    try:
        with lake.fs.open_input_file(path) as handle:
            found = pq.read_schema(handle)
    except (pa.ArrowInvalid, OSError) as e:
        raise ContractError(f"cannot read {uri}: {e}") from e
    naive: list[str] = []
    missing: list[str] = []
    for fld in schema:
        where = found.get_all_field_indices(fld.name)
        if not where and fld.name in optional:
            missing.append(fld.name)
            continue
        if not where:
            raise ContractError(f"{uri}: required column '{fld.name}' is missing")
        if len(where) > 1:
            raise ContractError(f"{uri}: column '{fld.name}' appears {len(where)} times")
        typ = found.field(where[0]).type
        if pa.types.is_null(typ) and fld.name in optional:
            continue
        if not compatible(fld.type, typ):
            raise ContractError(
                f"{uri}: column '{fld.name}' has type {typ}, the contract says {fld.type}"
            )
        if pa.types.is_timestamp(typ) and typ.tz is None:
            if naive_zone is None:
                raise ContractError(
                    f"{uri}: column '{fld.name}' holds timestamps without a time zone ({typ}); "
                    "write them as UTC instants, or set naive_timestamps_zone to the zone "
                    "they were written in"
                )
            naive.append(fld.name)
    return LandingFile(path, uri, tuple(naive), tuple(missing))


class LandingReader:
    """The day's files as one stream of `schema` + `load_reason`, `rid` (see ROW_BITS).

    A value that cannot be kept (invalid UTF-8, an unsigned count past int64, a local time that
    is ambiguous or missing in `naive_zone`) becomes null and its row carries the reason, so the
    contract quarantines the row instead of failing the day. A file that breaks mid-read fails
    the day; the error is kept in `error`, since DuckDB reports it only as a Python exception.
    """

    def __init__(
        self, lake: Lake, files: list[LandingFile], schema: pa.Schema, naive_zone: str | None
    ):
        self.lake, self.files, self.schema, self.naive_zone = lake, files, schema, naive_zone
        self.out_schema = schema.append(pa.field("load_reason", pa.string()))
        self.out_schema = self.out_schema.append(pa.field("rid", pa.int64()))
        self.error: ContractError | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.out_schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for index, f in enumerate(self.files):
            offset, base = 0, index << ROW_BITS
            # Column chunks read through a small buffer, not whole row groups up front: a
            # producer's 2M-row groups would otherwise sit in memory outside DuckDB's limit.
            pf = pq.ParquetFile(
                self.lake.fs.open_input_file(f.path),
                pre_buffer=False,
                buffer_size=READ_BUFFER_BYTES,
            )
            present = [c for c in self.schema.names if c not in f.missing_columns]
            batches = pf.iter_batches(columns=present)
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as e:
                    self.error = ContractError(
                        f"cannot read {f.uri}, column '{_broken_column(pf, present)}': {e}"
                    )
                    raise self.error from e
                n = batch.num_rows
                columns, reasons = [], []
                for fld in self.schema:
                    if fld.name in f.missing_columns:
                        columns.append(pa.nulls(n, fld.type))
                        continue
                    col, col_reasons = self._typed(f, fld, batch.column(fld.name))
                    columns.append(col)
                    reasons.extend(col_reasons)
                yield pa.RecordBatch.from_arrays(
                    [
                        *columns,
                        _join_reasons(reasons, n),
                        # numpy, not a Python list: no per-row Python objects.
                        pa.array(np.arange(base + offset, base + offset + n, dtype=np.int64)),
                    ],
                    schema=self.out_schema,
                )
                offset += n

    def _typed(
        self, f: LandingFile, fld: pa.Field, col: pa.Array
    ) -> tuple[pa.Array, list[tuple[pa.Array, str]]]:
        """`col` as `fld.type`, and (mask, reason) for the values that had to become null."""
        name, typ = fld.name, fld.type
        reasons: list[tuple[pa.Array, str]] = []
        if pa.types.is_string(typ):
            col = col.cast(pa.string())
            try:
                col.validate(full=True)
            except pa.ArrowInvalid:
                bad = pa.array([not _utf8(v) for v in col.view(pa.binary()).to_pylist()])
                col = pc.if_else(bad, pa.scalar(None, pa.string()), col.view(pa.binary()))
                col = col.cast(pa.string())
                reasons.append((bad, f"{name}: invalid UTF-8"))
            return col, reasons
        if pa.types.is_integer(typ) and col.type == pa.uint64():
            bad = pc.fill_null(pc.greater(col, pa.scalar(INT64_MAX, pa.uint64())), False)
            if pc.any(bad).as_py():
                col = pc.if_else(bad, pa.scalar(None, col.type), col)
                reasons.append((bad, f"{name}: out of int64 range"))
        if pa.types.is_timestamp(typ) and name in f.naive_columns:
            col, zone_reasons = _from_zone(col, name, self.naive_zone or "UTC")
            reasons.extend(zone_reasons)
        # Integer -> float and ns -> us lose only precision; every range problem is handled above.
        try:
            return col.cast(typ, safe=not pa.types.is_floating(typ)), reasons
        except pa.ArrowInvalid:
            return col.cast(typ, safe=False), reasons


def _from_zone(col: pa.Array, name: str, zone: str) -> tuple[pa.Array, list[tuple[pa.Array, str]]]:
    """Naive wall-clock times in `zone` as UTC instants; ambiguous or skipped ones flagged."""
    first = pc.assume_timezone(col, zone, ambiguous="earliest", nonexistent="earliest")
    later = pc.assume_timezone(col, zone, ambiguous="latest", nonexistent="earliest")
    gap = pc.assume_timezone(col, zone, ambiguous="earliest", nonexistent="latest")
    ambiguous = pc.fill_null(pc.not_equal(first, later), False)
    missing = pc.fill_null(pc.not_equal(first, gap), False)
    return first, [
        (ambiguous, f"{name}: ambiguous local time in {zone}"),
        (missing, f"{name}: local time that does not exist in {zone}"),
    ]


def _utf8(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _join_reasons(reasons: list[tuple[pa.Array, str]], n: int) -> pa.Array:
    """One `load_reason` per row: the reasons whose mask is set, joined by '; ' (rare rows)."""
    flagged = [(mask.to_pylist(), r) for mask, r in reasons if pc.any(mask).as_py()]
    if not flagged:
        return pa.nulls(n, pa.string())
    rows = ["; ".join(r for mask, r in flagged if mask[i]) or None for i in range(n)]
    return pa.array(rows, pa.string())


def _broken_column(pf: pq.ParquetFile, names: list[str]) -> str:
    """The first column whose pages cannot be decoded (a corrupt file, named in the error)."""
    for name in names:
        try:
            for i in range(pf.num_row_groups):
                pf.read_row_group(i, columns=[name])
        except (pa.ArrowException, OSError):
            return name
    return "?"
