"""The ingest and label assets through Dagster on a small hand-written lake."""

import datetime as dt

import dagster as dg
import pyarrow.parquet as pq
import pytest

from vq_assets.core.lake.store import Lake
from vq_assets_tests.dagster_util import materialize_days
from vq_assets_tests.landing import event, ts, video, write_day

DAYS = [f"2026-01-{d:02d}" for d in range(1, 11)]


def build_lake(root, late_watch: float = 1.0):
    for i, day in enumerate(DAYS):
        vids = [
            video(f"v{i}a", ts(day, 6), 8.0, creator_id="c1"),
            video(f"v{i}b", ts(day, 18), 20.0, creator_id=f"c{i % 3}"),
        ]
        write_day(root, "videos", day, vids)
    for day in DAYS:
        events = []
        for i, created in enumerate(DAYS):
            if created > day:
                continue
            for suffix, hours in (("a", 6), ("b", 18)):
                at = ts(day, hours + 1) if created == day else ts(day, 3)
                events.append(event(f"v{i}{suffix}", at, 2.0 if suffix == "a" else 25.0))
        # An event on day 10 for the video of day 1: past its window.
        if day == DAYS[-1]:
            events.append(event("v0a", ts(day, 5), late_watch))
        write_day(root, "watch_events", day, events)


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _read(root, asset, day):
    return pq.read_table(Lake.local(root).asset_file(asset, day))


def test_chain_materialises_and_rerun_replaces(tmp_path, instance):
    build_lake(tmp_path)
    materialize_days(["raw_videos", "watch_events", "video_watch_daily"], DAYS, tmp_path, instance)
    materialize_days(["video_labels_7d"], DAYS[:2], tmp_path, instance)
    materialize_days(["creator_features"], DAYS[-1:], tmp_path, instance)
    labels = _read(tmp_path, "video_labels_7d", DAYS[0]).to_pylist()
    by_id = {r["video_id"]: r for r in labels}
    # v0a: an event on each of days 1..8 inside the window (day 1 at 07:00, days 2..8 at 03:00),
    # day 8 03:00 < created 06:00 + 7d; the day-9 and day-10 events fall outside.
    assert by_id["v0a"]["plays"] == 8 and by_id["v0a"]["skips"] == 8
    assert by_id["v0b"]["full_watches"] == by_id["v0b"]["plays"] == 8
    features = {r["video_id"]: r for r in _read(tmp_path, "creator_features", DAYS[-1]).to_pylist()}
    # Day 10 may use labels of days whose window closed by its start: days 1 and 2, where
    # creator c1 has v0a, v1a and v1b.
    assert features["v9a"]["prior_labeled"] == 3
    assert features["v9a"]["prior_videos"] == 9 + sum(1 for i in range(9) if i % 3 == 1)

    before = _read(tmp_path, "video_labels_7d", DAYS[0])
    materialize_days(["video_labels_7d"], DAYS[:1], tmp_path, instance)
    after = _read(tmp_path, "video_labels_7d", DAYS[0])
    assert after.equals(before)
    files = list((tmp_path / "assets" / "video_labels_7d" / f"dt={DAYS[0]}").iterdir())
    assert [f.name for f in files] == ["part-0.parquet"]


def test_crash_mid_write_keeps_previous_version(tmp_path, instance, monkeypatch):
    build_lake(tmp_path)
    materialize_days(["raw_videos"], DAYS[:1], tmp_path, instance)
    before = _read(tmp_path, "raw_videos", DAYS[0])

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    result = materialize_days(["raw_videos"], DAYS[:1], tmp_path, instance, raise_on_error=False)
    assert not result[0].success
    monkeypatch.undo()
    assert _read(tmp_path, "raw_videos", DAYS[0]).equals(before)
    leftovers = list((tmp_path / "assets" / "raw_videos" / f"dt={DAYS[0]}").iterdir())
    assert [f.name for f in leftovers] == ["part-0.parquet"]


def test_creator_features_ignore_events_after_the_day(tmp_path, instance):
    build_lake(tmp_path)
    names = ["raw_videos", "watch_events", "video_watch_daily"]
    materialize_days(names, DAYS, tmp_path, instance)
    materialize_days(["video_labels_7d"], DAYS[:2], tmp_path, instance)
    materialize_days(["creator_features"], ["2026-01-09"], tmp_path, instance)
    before = _read(tmp_path, "creator_features", "2026-01-09")
    # Rewrite everything that happens on day 9 and later, then recompute the whole chain.
    for day in DAYS[8:]:
        write_day(tmp_path, "watch_events", day, [event("v0a", ts(day, 1), 0.5)] * 50)
    materialize_days(names, DAYS[8:], tmp_path, instance)
    materialize_days(["video_labels_7d"], DAYS[:2], tmp_path, instance)
    materialize_days(["creator_features"], ["2026-01-09"], tmp_path, instance)
    assert _read(tmp_path, "creator_features", "2026-01-09").equals(before)
    # ...while the labels whose windows include day 9 did change, so the test can fail.
    assert _read(tmp_path, "video_labels_7d", DAYS[1]) != _read(
        tmp_path, "video_labels_7d", DAYS[0]
    )


def test_labels_refuse_a_half_filled_window(tmp_path, instance):
    build_lake(tmp_path)
    materialize_days(
        ["raw_videos", "watch_events", "video_watch_daily"], DAYS[:5], tmp_path, instance
    )
    (result,) = materialize_days(
        ["video_labels_7d"], DAYS[:1], tmp_path, instance, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "video_watch_daily is not materialized for ['2026-01-06', '2026-01-07'," in message


def test_quarantine_share_check_fails_and_blocks(tmp_path, instance):
    build_lake(tmp_path)
    day = DAYS[0]
    bad = [video(f"bad{i}", ts(day, 1), -1.0) for i in range(5)]
    write_day(tmp_path, "videos", day, bad, name="part-00001.parquet")
    (result,) = materialize_days(["raw_videos"], [day], tmp_path, instance, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["quarantine_share"].passed
    # A failed day publishes nothing: its valid rows and its quarantine wait under .rejected/.
    lake = Lake.local(tmp_path)
    assert not lake.exists(lake.asset_file("raw_videos", day))
    quarantined = pq.read_table(
        lake.rejected_dir(lake.quarantine_dir("videos", day)) + "/part-0.parquet"
    )
    assert quarantined.num_rows == 5
    assert set(quarantined.column("reason").to_pylist()) == {"duration_s is not > 0"}
    assert dt.date.fromisoformat(day)
