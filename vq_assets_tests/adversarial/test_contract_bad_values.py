"""Issue 15.10: one bad value quarantines its row; a broken file names itself and its column.

Invalid UTF-8 in one caption and a uint64 `creator_followers` past int64's maximum used to fail
the whole day with a raw DuckDB error. A corrupt data page said `Out of buffer` with no file, and
a file with two `duration_s` columns said `KeyError`.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.contract import VIDEOS, VIDEOS_SCHEMA, ContractError, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import ts, video, write_day

DAY = "2026-01-05"


def _validate(root):
    with connect() as con:
        return validate_day(con, Lake.local(root), VIDEOS, DAY)


def _landing_file(root, table: pa.Table, name: str = "part-00000.parquet", **write):
    folder = root / "landing" / "videos" / f"dt={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name, **write)
    (folder / "_SUCCESS").touch()
    return folder / name


def _videos(n: int) -> pa.Table:
    return pa.Table.from_pylist(
        [video(f"v{i}", ts(DAY, i * 23 / n)) for i in range(n)], VIDEOS_SCHEMA
    )


def _replaced(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def test_invalid_utf8_quarantines_the_row(tmp_path):
    captions = pa.array([b"fine", b"bad \xff\xfe", None], pa.binary()).view(pa.string())
    _landing_file(tmp_path, _replaced(_videos(3), "caption", captions))
    result = _validate(tmp_path)
    assert result.valid.column("video_id").to_pylist() == ["v0", "v2"]
    assert result.valid.column("caption").to_pylist() == ["fine", None]
    assert result.rejects.column("video_id").to_pylist() == ["v1"]
    assert result.rejects.column("reason").to_pylist() == ["caption: invalid UTF-8"]
    assert result.rejects.column("source_row").to_pylist() == [1]
    assert result.rows_read == 3 == result.valid.num_rows + result.rejects.num_rows


def test_uint64_past_int64_quarantines_the_row(tmp_path):
    followers = pa.array([5, 2**63 + 5, None, 2**63 - 1], pa.uint64())
    _landing_file(tmp_path, _replaced(_videos(4), "creator_followers", followers))
    result = _validate(tmp_path)
    assert result.valid.column("creator_followers").to_pylist() == [5, None, 2**63 - 1]
    assert result.rejects.column("video_id").to_pylist() == ["v1"]
    assert result.rejects.column("reason").to_pylist() == ["creator_followers: out of int64 range"]
    assert result.rows_read == 4 == result.valid.num_rows + result.rejects.num_rows


def test_bad_values_in_several_columns_are_all_named(tmp_path):
    table = _replaced(_videos(2), "caption", pa.array([b"\xc3", b"ok"]).view(pa.string()))
    table = _replaced(table, "creator_followers", pa.array([2**64 - 1, 1], pa.uint64()))
    _landing_file(tmp_path, table)
    result = _validate(tmp_path)
    assert result.rejects.column("reason").to_pylist() == [
        "caption: invalid UTF-8; creator_followers: out of int64 range"
    ]
    assert result.valid.num_rows == 1


def test_duplicate_column_fails_naming_file_and_column(tmp_path):
    table = _videos(1)
    table = pa.table(
        [*table.columns, table.column("duration_s")], [*table.column_names, "duration_s"]
    )
    path = _landing_file(tmp_path, table)
    with pytest.raises(ContractError, match="column 'duration_s' appears 2 times") as err:
        _validate(tmp_path)
    assert str(path) in str(err.value)


def test_corrupt_data_page_fails_naming_file_and_column(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("ok", ts(DAY, 1))])
    table = _replaced(
        _videos(2000), "caption", pa.array([f"caption {i} " * 20 for i in range(2000)])
    )
    # No dictionary: the chunk is data pages only, so its middle is inside a data page.
    path = _landing_file(tmp_path, table, "part-00001.parquet", use_dictionary=False)
    meta = pq.ParquetFile(path).metadata
    caption = meta.schema.names.index("caption")
    chunk = meta.row_group(0).column(caption)
    start = chunk.data_page_offset
    data = bytearray(path.read_bytes())
    middle = start + chunk.total_compressed_size // 2
    data[middle : middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(ContractError, match="column 'caption'") as err:
        _validate(tmp_path)
    assert f"cannot read {path}" in str(err.value)
