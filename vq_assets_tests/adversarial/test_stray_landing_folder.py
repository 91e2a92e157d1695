"""A folder in the landing zone that is no day must not stop the sensor (DESIGN §2, §3).

`<lake>/landing/videos/dt=2026-03-07.bak/` with a `_SUCCESS` marker used to become partition
key "2026-03-07.bak": Dagster raised DagsterUnknownPartitionError on every tick, so no real day
was requested any more. The tick now skips such folders and names them.
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from vq_assets.core.lake.store import Lake, is_iso_day
from vq_assets_tests.defs.test_automation import land, tick

STRAY = ("2026-03-07.bak", "2026-3-8", "latest", "2026-02-30")
# Late enough that every stray value sorts inside the daily partitions' range: the key would
# otherwise be waved through as "not over yet" instead of failing the tick.
NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _stray_folder(root: Path, table: str, value: str) -> Path:
    folder = root / "landing" / table / f"dt={value}"
    folder.mkdir(parents=True)
    (folder / "_SUCCESS").touch()
    return folder


def test_is_iso_day_takes_only_exact_calendar_days():
    assert is_iso_day("2026-03-07")
    for value in (*STRAY, "20260307", "2026-W10-6", "2026-03-07 ", "２０２６-03-07"):
        assert not is_iso_day(value), value


def test_list_days_leaves_stray_folders_out_and_names_them(tmp_path):
    land(tmp_path, "2026-03-06")
    for value in STRAY:
        _stray_folder(tmp_path, "videos", value)
    lake = Lake.local(tmp_path)
    videos = lake.path("landing", "videos")
    assert lake.list_days(videos) == ["2026-03-06"]
    assert lake.stray_partitions(videos) == sorted(f"{videos}/dt={v}" for v in STRAY)


def test_a_stray_folder_is_skipped_and_reported_while_real_days_are_requested(tmp_path, instance):
    land(tmp_path, "2026-03-06")
    strays = [_stray_folder(tmp_path, t, v) for t in ("videos", "watch_events") for v in STRAY]
    with dg.partition_loading_context(effective_dt=NOW):
        first = tick(instance, tmp_path)
        assert [(r.run_key, r.partition_key) for r in first.run_requests] == [
            ("chain-2026-03-06", "2026-03-06")
        ]
        cursor = json.loads(first.cursor)
        assert cursor["chain"] == ["2026-03-06"]
        assert cursor["stray_folders"] == sorted(str(s) for s in strays)

        # Nothing new: the skip reason still names every stray folder, and a day landing next
        # to them is requested.
        again = tick(instance, tmp_path, first.cursor)
        assert again.run_requests == []
        assert all(str(s) in again.skip_message for s in strays)
        land(tmp_path, "2026-03-07")
        third = tick(instance, tmp_path, again.cursor)
        assert [r.partition_key for r in third.run_requests] == ["2026-03-07"]

    # Once removed, the folders are no longer reported.
    for s in strays:
        (s / "_SUCCESS").unlink()
        s.rmdir()
    with dg.partition_loading_context(effective_dt=NOW):
        clean = tick(instance, tmp_path, third.cursor)
    assert "stray_folders" not in json.loads(clean.cursor)
