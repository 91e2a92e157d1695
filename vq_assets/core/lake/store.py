"""The lake: one root (a local folder or s3://bucket/prefix) and the paths the asset chain uses.

Every derived partition is a single parquet file, `part-0.parquet`, replaced atomically: a local
write goes to a temporary file and is renamed over the old one; an S3 PUT (or a completed
multipart upload) replaces the object in one step. A crash mid-write therefore leaves the previous
version intact, and a re-run replaces rather than duplicates. A version that failed a blocking
check is not published: it goes to `.rejected/` beside the partition (`write_table(...,
publish=False)`), and the previous version stays. A local write killed mid-way leaves its
temporary file behind; the next write to the same place removes such leftovers once they are
older than any live write could be (`STALE_TMP_SECONDS`).
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

PART_FILE = "part-0.parquet"
SUCCESS_MARKER = "_SUCCESS"
REJECTED_DIR = ".rejected"
ROW_GROUP_SIZE = 1 << 20  # rows per parquet row group, whoever writes the file
# The column a table spanning several partitions (a multi-partition backfill run) names each
# row's partition in; `split_partitions` takes it off again, so no partition file carries it.
PARTITION_COLUMN = "_partition"
# A temporary file untouched this long belongs to a dead writer: a live one keeps writing to it.
STALE_TMP_SECONDS = 600.0
# Exactly YYYY-MM-DD in ASCII digits: `date.fromisoformat` alone also takes "20260101" and
# "2026-W01-1", which are not partition keys.
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def is_iso_day(value: str) -> bool:
    """Whether `value` is a real calendar day written exactly as YYYY-MM-DD (a partition key)."""
    if not _ISO_DAY.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:  # 2026-02-30
        return False
    return True


def _tmp_name(target: str) -> str:
    """The temporary file a local write of `target` goes through: hidden (a leading dot, so no
    listing takes it for data) and unique per write."""
    directory, _, name = target.rpartition("/")
    return f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"


def _sweep_stale_tmp(target: str) -> None:
    """Remove temporary files of earlier writes of `target` that a killed writer left behind.

    Only names `_tmp_name` makes for this target are touched, and only once they are older than
    `STALE_TMP_SECONDS`, so a concurrent writer's file in progress is left alone.
    """
    directory, _, name = target.rpartition("/")
    # Also the names before they were hidden (`<name>.<hex>.tmp`, from write_bytes).
    pattern = re.compile(rf"\.?{re.escape(name)}\.[0-9a-f]{{32}}\.tmp")
    cutoff = time.time() - STALE_TMP_SECONDS
    with os.scandir(directory) as entries:
        stale = [e.path for e in entries if pattern.fullmatch(e.name) and e.is_file()]
    for path in stale:
        try:
            if os.stat(path).st_mtime < cutoff:
                os.remove(path)
        except FileNotFoundError:  # another writer swept it first
            pass


class LakeError(RuntimeError):
    """A lake path is missing or unreadable; the message names it."""


@dataclass(frozen=True)
class StagedFile:
    """A partition already written as parquet at `path`, a local file from
    `Lake.staging_path`, waiting for `Lake.publish_staged` (an output too large for Python: the
    lake IO manager publishes it in place of a table)."""

    path: str
    num_rows: int


@dataclass(frozen=True)
class Lake:
    """A lake root plus the filesystem that reaches it.

    `root` is what users configure (`./.vq/lake`, `/data/lake`, `s3://bucket/prefix`); `fs` is a
    pyarrow filesystem able to read and write under it (LocalFileSystem for local roots; an
    S3FileSystem built from the S3 resource's credentials and endpoint for s3:// roots).
    `s3_client` (a boto3 S3 client, from dagster-aws's S3 resource) uploads objects on S3.
    """

    root: str
    fs: pafs.FileSystem = field(default_factory=pafs.LocalFileSystem)
    s3_client: Any = None

    def __reduce__(self):
        # Decode workers get the lake by pickling: the filesystem travels, the boto3 client
        # (unpicklable, and only needed to upload) does not.
        return (Lake, (self.root, self.fs))

    @classmethod
    def local(cls, root: str | os.PathLike[str]) -> Lake:
        return cls(os.path.abspath(os.fspath(root)), pafs.LocalFileSystem())

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    @property
    def base(self) -> str:
        """The root as a path inside `fs` (no scheme)."""
        return self.root.removeprefix("s3://").rstrip("/")

    # -- paths -------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri(self, path: str) -> str:
        """A path inside `fs` as users and other systems see it (s3:// restored)."""
        return ("s3://" + path) if self.is_s3 else path

    def landing_dir(self, table: str, day: str) -> str:
        return self.path("landing", table, f"dt={day}")

    def asset_dir(self, asset: str, day: str | None = None) -> str:
        return self.path("assets", asset, f"dt={day}") if day else self.path("assets", asset)

    def quarantine_dir(self, table: str, day: str) -> str:
        return self.path("quarantine", table, f"dt={day}")

    def asset_file(self, asset: str, day: str | None = None) -> str:
        return f"{self.asset_dir(asset, day)}/{PART_FILE}"

    # -- queries on the filesystem -----------------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def day_complete(self, table: str, day: str) -> bool:
        return self.exists(f"{self.landing_dir(table, day)}/{SUCCESS_MARKER}")

    def list_files(self, directory: str, suffix: str = ".parquet") -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        return sorted(
            i.path
            for i in info
            if i.type == pafs.FileType.File
            and i.base_name.endswith(suffix)
            and not i.base_name.startswith((".", "_"))
        )

    def _dt_values(self, directory: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        return sorted(
            i.base_name[3:]
            for i in info
            if i.type == pafs.FileType.Directory and i.base_name.startswith("dt=")
        )

    def list_days(self, directory: str) -> list[str]:
        """The `dt=YYYY-MM-DD` partitions under a table or asset folder, sorted.

        Folders whose value is not a calendar day (`dt=2026-03-07.bak`, `dt=latest`) are left
        out: they are no partition, and a key Dagster does not know fails whoever asks for it.
        `stray_partitions` names them.
        """
        return [d for d in self._dt_values(directory) if is_iso_day(d)]

    def stray_partitions(self, directory: str) -> list[str]:
        """The `dt=` folders under `directory` that `list_days` leaves out, as URIs."""
        return [
            self.uri(f"{directory}/dt={d}") for d in self._dt_values(directory) if not is_iso_day(d)
        ]

    def read_bytes(self, uri: str) -> bytes:
        """Media bytes by URI: an s3:// URI, an absolute path, or a path relative to the root."""
        path = uri.removeprefix("s3://") if uri.startswith("s3://") else uri
        if not self.is_s3 and not os.path.isabs(path):
            path = self.path(path)
        elif self.is_s3 and not uri.startswith("s3://"):
            path = self.path(path)
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            if "not found" in str(e).lower() or "NoSuchKey" in str(e):
                raise FileNotFoundError(uri) from e
            raise

    # -- reading and writing -----------------------------------------------------------------
    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns, filesystem=self.fs)
        except FileNotFoundError as e:
            raise LakeError(f"missing parquet file {self.uri(path)}") from e
        except (pa.ArrowInvalid, OSError) as e:
            raise LakeError(f"cannot read parquet file {self.uri(path)}: {e}") from e

    def write_table(self, directory: str, table: pa.Table, *, publish: bool = True) -> str:
        """Replace the partition in `directory` with `table`, atomically; return its URI.

        `publish=False` (a blocking check failed) keeps the partition as it was and writes
        `table` to `rejected_dir(directory)` instead, for inspection.
        """
        if not publish:
            directory = self.rejected_dir(directory)
        target = f"{directory}/{PART_FILE}"
        if self.is_s3:
            # One object, written once: S3 makes it visible only when the upload completes.
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_SIZE)
            buf.seek(0)
            self._put(target, buf)
        else:
            os.makedirs(directory, exist_ok=True)
            _sweep_stale_tmp(target)
            tmp = _tmp_name(target)
            try:
                pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP_SIZE)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        return self.uri(target)

    def write_partitions(
        self, asset: str, table: pa.Table, days: Sequence[str] | None, *, publish: bool = True
    ) -> list[str]:
        """Write an asset's output over `days` (its partition keys; None: unpartitioned), one
        file per day, each replaced atomically (`split_partitions` cuts a multi-day table);
        return the URIs in day order."""
        return [
            self.write_table(self.asset_dir(asset, day), part, publish=publish)
            for day, part in split_partitions(table, days)
        ]

    def staging_path(self, asset: str, day: str) -> str:
        """A local path where a streamed writer puts partition `day` of `asset` before
        `publish_staged` moves it in. Local lake: a hidden temporary name in the asset's folder,
        beside no partition (so a rejected first try leaves no empty `dt=` folder) and on the
        same filesystem (the publish is a rename); a killed writer's file is swept like any
        temporary file. S3 lake: a local temporary file, uploaded on publish."""
        if self.is_s3:
            fd, path = tempfile.mkstemp(prefix=f".vq-{asset}-{day}-", suffix=".parquet.tmp")
            os.close(fd)
            return path
        target = f"{self.asset_dir(asset)}/dt={day}.parquet"
        os.makedirs(self.asset_dir(asset), exist_ok=True)
        _sweep_stale_tmp(target)
        return _tmp_name(target)

    def publish_staged(self, staged: StagedFile, directory: str, *, publish: bool = True) -> str:
        """Make `staged` the partition in `directory`, atomically, as `write_table` does with a
        table (`publish=False`: to `.rejected/` instead); the staged file is gone afterwards."""
        if not publish:
            directory = self.rejected_dir(directory)
        target = f"{directory}/{PART_FILE}"
        try:
            if self.is_s3:
                if self.s3_client is None:
                    raise LakeError(f"writing {self.uri(target)} needs an S3 client")
                bucket, _, key = target.partition("/")
                # Streamed from disk (multipart when large): visible only once complete.
                self.s3_client.upload_file(staged.path, bucket, key)
            else:
                os.makedirs(directory, exist_ok=True)
                os.replace(staged.path, target)
        finally:
            self.discard_staged(staged.path)
        return self.uri(target)

    @staticmethod
    def discard_staged(path: str) -> None:
        """Remove a staged file that will not be published (its run failed first)."""
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def rejected_dir(self, directory: str) -> str:
        """Where a version that failed its blocking check goes: `<parent>/.rejected/<name>`,
        outside the partition folder, so that no `dt=` listing ever sees it as a partition."""
        parent, _, name = directory.rpartition("/")
        return f"{parent}/{REJECTED_DIR}/{name}"

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write one object or file, atomically (model files, media)."""
        if self.is_s3:
            self._put(path, io.BytesIO(data))
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _sweep_stale_tmp(path)
        tmp = _tmp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def write_marker(self, directory: str) -> None:
        if self.is_s3:
            self._put(f"{directory}/{SUCCESS_MARKER}", io.BytesIO(b""))
            return
        os.makedirs(directory, exist_ok=True)
        open(f"{directory}/{SUCCESS_MARKER}", "wb").close()

    def _put(self, path: str, data: io.BytesIO) -> None:
        if self.s3_client is None:
            raise LakeError(f"writing {self.uri(path)} needs an S3 client (the lake's S3 resource)")
        bucket, _, key = path.partition("/")
        self.s3_client.upload_fileobj(data, bucket, key)

    def delete_partition(self, directory: str) -> None:
        if self.exists(directory):
            self.fs.delete_dir(directory)

    def register(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        files: Iterable[str],
        schema: pa.Schema,
        *,
        with_source: bool = False,
    ) -> None:
        """Expose parquet files to DuckDB as view `name`, streamed, never loaded whole.

        Local files go through DuckDB's own parallel parquet reader. S3 files go through a
        pyarrow dataset on the lake's filesystem (DuckDB cannot download its httpfs extension
        offline); DuckDB scans it batch by batch with projection and filter pushdown. An empty
        file list gives an empty view with `schema`, so SQL works on days with no data.
        `with_source` adds `source_file` (URI) and `source_row` (0-based row in that file).
        """
        files = list(files)
        con.execute(f"DROP VIEW IF EXISTS {name}")
        if with_source:
            schema = schema.append(pa.field("source_file", pa.string()))
            schema = schema.append(pa.field("source_row", pa.int64()))
        if not files:
            con.register(name, schema.empty_table())
        elif self.is_s3 and with_source:
            con.register(name, self._reader_with_source(files, schema))
        elif self.is_s3:
            con.register(name, ds.dataset(files, schema=schema, filesystem=self.fs))
        else:
            paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            source = ", filename = true, file_row_number = true" if with_source else ""
            rename = (
                " RENAME (filename AS source_file, file_row_number AS source_row)"
                if with_source
                else ""
            )
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {name} AS "
                f"SELECT *{rename} FROM read_parquet([{paths}], union_by_name = true{source})"
            )

    def _reader_with_source(self, files: list[str], schema: pa.Schema) -> pa.RecordBatchReader:
        """Stream S3 files batch by batch, cast to `schema`, tagged with file and row."""
        data_schema = pa.schema(list(schema)[:-2])

        def batches():
            for f in files:
                offset = 0
                pf = pq.ParquetFile(self.fs.open_input_file(f))
                for batch in pf.iter_batches(columns=data_schema.names):
                    n = batch.num_rows
                    yield pa.RecordBatch.from_arrays(
                        [
                            *(batch.column(c.name).cast(c.type, safe=False) for c in data_schema),
                            pa.array([self.uri(f)] * n, pa.string()),
                            pa.array(range(offset, offset + n), pa.int64()),
                        ],
                        schema=schema,
                    )
                    offset += n

        return pa.RecordBatchReader.from_batches(schema, batches())


@dataclass(frozen=True)
class PartitionFiles:
    """An upstream asset's partitions as files, handed to DuckDB rather than loaded whole."""

    lake: Lake
    asset: str
    days: tuple[str, ...]
    files: tuple[str, ...]

    def register(
        self, con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema | None = None
    ) -> None:
        """View `name` over the files; `schema` is needed only when there may be none."""
        if schema is None:
            if not self.files:
                raise LakeError(f"no partitions of {self.asset} to read and no schema given")
            schema = pq.read_schema(self.lake.fs.open_input_file(self.files[0]))
        self.lake.register(con, name, self.files, schema)

    def read(self, columns: list[str] | None = None, *, with_partition: bool = False) -> pa.Table:
        """The files' rows, in file order; `with_partition` adds `PARTITION_COLUMN`, each row's
        partition (day), so that an asset spanning several days can hand back one table that
        `split_partitions` cuts into a file per day."""
        tables = [self.lake.read_table(f, columns) for f in self.files]
        if with_partition:
            if len(self.days) != len(tables):
                raise LakeError(f"{self.asset}: an unpartitioned input has no partition column")
            tables = [
                t.append_column(PARTITION_COLUMN, pa.array([d] * t.num_rows, pa.string()))
                for d, t in zip(self.days, tables, strict=True)
            ]
        return pa.concat_tables(tables)


def split_partitions(
    table: pa.Table, days: Sequence[str] | None
) -> list[tuple[str | None, pa.Table]]:
    """One `(day, table)` per partition an output covers, ready for `Lake.write_table`.

    `days` are the output's partition keys (None: unpartitioned). A table with
    `PARTITION_COLUMN` is cut by it, and the column dropped: every day of `days` gets its rows,
    an empty table when it has none (a day with no rows is still materialised), and a row whose
    day is not in `days` is an error rather than lost. A table without the column belongs to a
    single partition as it is; for several days it cannot be split, and that is an error too.
    """
    if not days:
        if PARTITION_COLUMN in table.column_names:
            raise LakeError(f"an unpartitioned output has no partitions: drop {PARTITION_COLUMN!r}")
        return [(None, table)]
    days = list(days)
    if PARTITION_COLUMN not in table.column_names:
        if len(days) == 1:
            return [(days[0], table)]
        raise LakeError(
            f"an output over {len(days)} partitions ({days[0]}..{days[-1]}) needs a "
            f"{PARTITION_COLUMN!r} column to split it by"
        )
    column = table.column(PARTITION_COLUMN)
    stray = sorted(set(pc.unique(column).to_pylist()) - set(days), key=str)
    if stray:
        raise LakeError(f"rows for partitions outside the run's {days[0]}..{days[-1]}: {stray}")
    data = table.drop_columns([PARTITION_COLUMN])
    return [(d, data.filter(pc.equal(column, d))) for d in days]


def stream_to_parquet(
    reader: pa.RecordBatchReader, path: str, schema: pa.Schema | None = None
) -> int:
    """Stream `reader` into a parquet file at `path` as `Lake.write_table` writes a table (zstd,
    full ROW_GROUP_SIZE-row groups), holding about one row group; return the row count.

    (DuckDB's own COPY would mark columns without nulls `required`, changing the schema.)
    `schema`: the file's schema (default: the reader's).
    """
    schema = schema or reader.schema
    written, pending = 0, []
    with pq.ParquetWriter(path, schema, compression="zstd") as out:
        for batch in reader:
            pending.append(batch.cast(schema))
            written += batch.num_rows
            if sum(b.num_rows for b in pending) >= ROW_GROUP_SIZE:
                table = pa.Table.from_batches(pending, schema)
                cut = table.num_rows - table.num_rows % ROW_GROUP_SIZE
                out.write_table(table.slice(0, cut), row_group_size=ROW_GROUP_SIZE)
                pending = table.slice(cut).to_batches()
        if pending or not written:
            out.write_table(pa.Table.from_batches(pending, schema), row_group_size=ROW_GROUP_SIZE)
    return written
