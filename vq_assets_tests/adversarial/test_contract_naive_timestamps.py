"""Issue 15.8: timestamps without a time zone are not taken for UTC.

A parquet `timestamp` without tz holds wall-clock times of an unknown zone; read as UTC, data
written in UTC+1 came out an hour off. Such a file now fails the day naming file and column,
unless `naive_timestamps_zone` names the zone: then the times are converted to UTC, and a local
time that is ambiguous or does not exist in that zone quarantines its row.
"""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.contract import (
    VIDEOS,
    VIDEOS_SCHEMA,
    WATCH_EVENTS,
    ContractError,
    validate_day,
)
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import event, ts, video, write_day

DAY = "2026-01-05"


def _naive(path, column: str) -> None:
    """Rewrite `column` of the file as naive local times of Europe/Berlin (UTC+1 in winter)."""
    table = pq.read_table(path)
    berlin = [
        None if v is None else (v + dt.timedelta(hours=1)).replace(tzinfo=None)
        for v in table.column(column).to_pylist()
    ]
    idx = table.schema.get_field_index(column)
    pq.write_table(table.set_column(idx, column, pa.array(berlin, pa.timestamp("us"))), path)


def _validate(root, contract, day=DAY, **kw):
    with connect() as con:
        return validate_day(con, Lake.local(root), contract, day, **kw)


@pytest.mark.parametrize(
    ("contract", "column", "row"),
    [
        (VIDEOS, "created_at", video("v1", ts(DAY, 1))),
        (WATCH_EVENTS, "event_ts", event("v1", ts(DAY, 1), 3.0)),
    ],
)
def test_naive_timestamps_fail_the_day_naming_file_and_column(tmp_path, contract, column, row):
    path = write_day(tmp_path, contract.name, DAY, [row])
    _naive(path, column)
    with pytest.raises(ContractError, match="without a time zone") as err:
        _validate(tmp_path, contract)
    assert f"{path}: column '{column}'" in str(err.value)


def test_configured_zone_converts_to_utc(tmp_path):
    rows = [video("v1", ts(DAY, 0.5)), video("v2", ts(DAY, 23.5)), video("v3", ts(DAY, -0.5))]
    _naive(write_day(tmp_path, "videos", DAY, rows), "created_at")
    # A second, tz-aware file in the same day is read as it is.
    write_day(tmp_path, "videos", DAY, [video("v4", ts(DAY, 2))], name="part-00001.parquet")
    result = _validate(tmp_path, VIDEOS, naive_timestamps_zone="Europe/Berlin")
    cols = result.valid.to_pydict()
    got = dict(zip(cols["video_id"], cols["created_at"], strict=True))
    assert got == {"v1": ts(DAY, 0.5), "v2": ts(DAY, 23.5), "v4": ts(DAY, 2)}
    assert result.rejects.column("video_id").to_pylist() == ["v3"]
    assert result.rejects.column("reason")[0].as_py() == "created_at outside the partition's day"
    assert result.rows_read == 4 == result.valid.num_rows + result.rejects.num_rows


def test_ambiguous_and_skipped_local_times_are_quarantined(tmp_path):
    day = "2026-10-25"  # Berlin: 03:00 CEST -> 02:00 CET, 02:30 happens twice
    wall = [dt.datetime(2026, 10, 25, 2, 30), dt.datetime(2026, 10, 25, 12, 0)]
    table = pa.Table.from_pylist([video("a", ts(day, 1)), video("b", ts(day, 2))], VIDEOS_SCHEMA)
    table = table.set_column(2, "created_at", pa.array(wall, pa.timestamp("us")))
    folder = tmp_path / "landing" / "videos" / f"dt={day}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    (folder / "_SUCCESS").touch()
    result = _validate(tmp_path, VIDEOS, day, naive_timestamps_zone="Europe/Berlin")
    assert result.valid.column("created_at").to_pylist() == [ts(day, 11)]
    assert result.rejects.column("reason").to_pylist() == [
        "created_at: ambiguous local time in Europe/Berlin"
    ]
    spring = [dt.datetime(2026, 3, 29, 2, 30)]  # 02:00 -> 03:00: 02:30 never happens
    day = "2026-03-29"
    folder = tmp_path / "landing" / "videos" / f"dt={day}"
    folder.mkdir(parents=True)
    one = pa.Table.from_pylist([video("c", ts(day, 1))], VIDEOS_SCHEMA)
    pq.write_table(
        one.set_column(2, "created_at", pa.array(spring, pa.timestamp("us"))),
        folder / "part-0.parquet",
    )
    (folder / "_SUCCESS").touch()
    result = _validate(tmp_path, VIDEOS, day, naive_timestamps_zone="Europe/Berlin")
    assert result.valid.num_rows == 0
    assert result.rejects.column("reason").to_pylist() == [
        "created_at: local time that does not exist in Europe/Berlin"
    ]


def test_zone_must_be_an_iana_name(tmp_path):
    write_day(tmp_path, "videos", DAY, [video("v1", ts(DAY, 1))])
    with pytest.raises(ValueError, match="naive_timestamps_zone must be an IANA"):
        _validate(tmp_path, VIDEOS, naive_timestamps_zone="CET+1")
