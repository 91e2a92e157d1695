"""Issue 15.6: no landing entry is skipped silently (README, the input contract).

A Spark-style directory named `part-00001.parquet`, a `_late.parquet` and an `x.PARQUET` used to
be passed over with their rows. Now `*.parquet` in any case is read, `_`/`.`-prefixed entries not
named `*.parquet` are ignored and listed, and anything else fails the day naming it.
"""

import pytest

from vq_assets.core.lake.contract import VIDEOS, ContractError, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import ts, video, write_day

DAY = "2026-01-05"


def _validate(root):
    with connect() as con:
        return validate_day(con, Lake.local(root), VIDEOS, DAY)


def test_upper_case_suffix_is_read(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))])
    write_day(tmp_path, "videos", DAY, [video("v2", ts(DAY, 2))], name="x.PARQUET")
    result = _validate(tmp_path)
    assert sorted(result.valid.column("video_id").to_pylist()) == ["v1", "v2"]
    assert result.rows_read == 2 == result.valid.num_rows + result.rejects.num_rows
    assert any(f.endswith("x.PARQUET") for f in result.files)


def test_metadata_entries_are_ignored_and_listed(tmp_path):
    folder = write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))]).parent
    (folder / ".part-00000.parquet.crc").write_bytes(b"crc")
    (folder / "_committed_123").write_text("{}")
    (folder / "_temporary").mkdir()
    result = _validate(tmp_path)
    assert result.rows_read == 1 == result.valid.num_rows
    assert sorted(p.rsplit("/", 1)[1] for p in result.ignored) == [
        ".part-00000.parquet.crc",
        "_committed_123",
        "_temporary",
    ]  # `_SUCCESS` is the marker, not listed


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (
            lambda d: write_day(d.parent.parent.parent, "videos", DAY, [], name="_late.parquet"),
            "_late.parquet (parquet named like metadata",
        ),
        (lambda d: (d / ".hidden.parquet").write_bytes(b"PAR1"), ".hidden.parquet (parquet named"),
        (lambda d: (d / "part-00001.parquet").mkdir(), "part-00001.parquet (a directory"),
        (lambda d: (d / "nested").mkdir(), "nested (a directory"),
        (lambda d: (d / "part-00002.csv").write_text("a,b"), "part-00002.csv (not a .parquet"),
        (lambda d: (d / "part-0.parquet.tmp").write_text(""), "part-0.parquet.tmp (not a .parq"),
    ],
)
def test_entries_neither_read_nor_ignorable_fail_the_day_naming_them(tmp_path, make, why):
    folder = write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))]).parent
    make(folder)
    with pytest.raises(ContractError, match="neither read nor ignored") as err:
        _validate(tmp_path)
    assert f"dt={DAY}/{why}" in str(err.value)


def test_every_offender_is_named_at_once(tmp_path):
    folder = write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))]).parent
    (folder / "part-00001.parquet").mkdir()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(ContractError) as err:
        _validate(tmp_path)
    assert "part-00001.parquet (a directory" in str(err.value)
    assert "notes.txt (not a .parquet" in str(err.value)
