"""The landing sensor and the schedules, evaluated the way the Dagster daemon evaluates them.

Each tick goes through `evaluate_tick` with the code location's repository, so a run request
for a partition that does not exist fails here exactly as it would fail the daemon's tick.
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster._utils.schedules import schedule_execution_time_iterator
from dagster_aws.s3 import S3Resource

from vq_assets.core.lake.store import Lake
from vq_assets.definitions import build_definitions
from vq_assets.defs.automation import (
    FEATURE_ASSETS,
    SCORING_ASSETS,
    landing_sensor,
    retrain_schedule,
)
from vq_assets.partitions import weekly
from vq_assets.resources import LakeResource
from vq_assets_tests.dagster_util import resources
from vq_assets_tests.landing import event, ts, video, write_day

DEFS = build_definitions()
REPO = DEFS.get_repository_def()
UTC = dt.UTC


def days(start: str, n: int) -> list[str]:
    d0 = dt.date.fromisoformat(start)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def land(root: Path, day: str, *, videos_marker: bool = True, events_marker: bool = True):
    """One small landed day: two videos created that day, one watch event each."""
    vids = [video(f"{day}-a", ts(day, 6)), video(f"{day}-b", ts(day, 18), creator_id="c2")]
    write_day(root, "videos", day, vids, marker=videos_marker)
    events = [event(v["video_id"], v["created_at"] + dt.timedelta(hours=1), 4.0) for v in vids]
    write_day(root, "watch_events", day, events, marker=events_marker)


def marker(root: Path, table: str, day: str) -> Path:
    return Path(root) / "landing" / table / f"dt={day}" / "_SUCCESS"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def tick(instance, lake_root, cursor: str | None = None):
    lake = LakeResource(root=str(lake_root), s3=S3Resource())
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, repository_def=REPO, resources={"lake": lake}
    ) as context:
        return landing_sensor.evaluate_tick(context)


def by_job(data, job: str) -> list[dg.RunRequest]:
    return [r for r in data.run_requests if r.job_name == job]


def selection(request: dg.RunRequest) -> list[str]:
    return sorted(k.to_user_string() for k in request.asset_selection)


def report(instance, asset: str, partitions: list[str]) -> None:
    for p in partitions:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=p))


# -- the daily chain --------------------------------------------------------------------------


def test_a_landed_day_is_requested_once(tmp_path, instance):
    land(tmp_path, "2026-01-03")
    land(tmp_path, "2026-01-04")
    first = tick(instance, tmp_path)
    assert [(r.run_key, r.job_name, r.partition_key) for r in first.run_requests] == [
        ("chain-2026-01-03", "daily_chain", "2026-01-03"),
        ("chain-2026-01-04", "daily_chain", "2026-01-04"),
    ]
    # Resolved as the daemon resolves it: the partition tag is what the run will carry.
    assert first.run_requests[0].tags["dagster/partition"] == "2026-01-03"
    assert json.loads(first.cursor)["chain"] == ["2026-01-03", "2026-01-04"]

    again = tick(instance, tmp_path, first.cursor)
    assert again.run_requests == []
    assert again.skip_message and "no new day landed" in again.skip_message
    assert json.loads(again.cursor) == json.loads(first.cursor)

    land(tmp_path, "2026-01-05")
    third = tick(instance, tmp_path, again.cursor)
    assert [r.run_key for r in third.run_requests] == ["chain-2026-01-05"]


@pytest.mark.parametrize(
    ("missing", "flags"),
    [("videos", {"videos_marker": False}), ("watch_events", {"events_marker": False})],
)
def test_a_day_waits_for_both_markers_and_is_picked_up_late(tmp_path, instance, missing, flags):
    late = "2026-01-02"
    land(tmp_path, late, **flags)
    for day in ("2026-01-03", "2026-01-04"):
        land(tmp_path, day)
    first = tick(instance, tmp_path)
    assert [r.partition_key for r in first.run_requests] == ["2026-01-03", "2026-01-04"]
    assert late not in json.loads(first.cursor)["chain"]

    # Still missing: nothing to do.
    assert tick(instance, tmp_path, first.cursor).run_requests == []

    # The marker lands after later days were requested: the late day is requested alone.
    marker(tmp_path, missing, late).touch()
    second = tick(instance, tmp_path, first.cursor)
    assert [(r.run_key, r.partition_key) for r in second.run_requests] == [(f"chain-{late}", late)]
    assert json.loads(second.cursor)["chain"] == [late, "2026-01-03", "2026-01-04"]


def test_a_day_marked_complete_before_it_is_over_waits_instead_of_failing_the_tick(
    tmp_path, instance
):
    # The producer marks day 2026-01-04 complete at 23:00 that day (or its clock runs ahead):
    # the daily partition only exists once the day is over. The tick must neither fail (that
    # would stall every other day too) nor forget the day.
    land(tmp_path, "2026-01-03")
    land(tmp_path, "2026-01-04")
    with dg.partition_loading_context(effective_dt=dt.datetime(2026, 1, 4, 23, tzinfo=UTC)):
        first = tick(instance, tmp_path)
    assert [r.partition_key for r in first.run_requests] == ["2026-01-03"]
    with dg.partition_loading_context(effective_dt=dt.datetime(2026, 1, 5, 0, 5, tzinfo=UTC)):
        second = tick(instance, tmp_path, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["2026-01-04"]


def test_days_before_the_start_date_are_ignored(tmp_path, instance):
    land(tmp_path, "2025-12-31")
    land(tmp_path, "2026-01-01")
    data = tick(instance, tmp_path)
    assert [r.partition_key for r in data.run_requests] == ["2026-01-01"]


def _write_model_record(lake_root: Path, week: str, promoted: bool) -> None:
    lake = Lake.local(lake_root)
    record = {"week": week, "model_version": "1", "promoted": promoted}
    lake.write_table(lake.asset_dir("quality_model", week), pa.Table.from_pylist([record]))


def test_the_chain_scores_only_days_a_promoted_model_can_serve(tmp_path, instance):
    for day in days("2026-01-09", 4):  # Fri..Mon; weeks start on Sunday 2026-01-11
        land(tmp_path, day)
    # No promoted model yet: scoring would only fail, so the chain stops at the features.
    data = tick(instance, tmp_path)
    assert {tuple(selection(r)) for r in data.run_requests} == {tuple(sorted(FEATURE_ASSETS))}

    _write_model_record(tmp_path, "2026-01-04", promoted=False)  # failed the gate
    _write_model_record(tmp_path, "2026-01-11", promoted=True)
    data = tick(instance, tmp_path)
    scored = {r.partition_key: selection(r) for r in data.run_requests}
    assert scored["2026-01-10"] == sorted(FEATURE_ASSETS)
    assert scored["2026-01-11"] == scored["2026-01-12"] == sorted(FEATURE_ASSETS + SCORING_ASSETS)


# -- labels -------------------------------------------------------------------------------------


def _materialize_partials(lake_root: Path, instance, day: str) -> None:
    # The three assets of one event day in one run: the order a backfill follows.
    dg.materialize(
        list(DEFS.assets),
        selection=["raw_videos", "watch_events", "video_watch_daily"],
        partition_key=day,
        resources=resources(lake_root),
        instance=instance,
    )


def test_labels_are_requested_once_the_window_partials_are_in_and_the_request_runs(
    tmp_path, instance
):
    label_day = "2026-01-01"
    window = days(label_day, 8)  # event days D..D+7
    for day in window:
        land(tmp_path, day)
    for day in window[:-1]:
        _materialize_partials(tmp_path, instance, day)
    first = tick(instance, tmp_path)
    assert len(by_job(first, "daily_chain")) == 8
    assert by_job(first, "labels") == []  # D+7's partials are still missing

    _materialize_partials(tmp_path, instance, window[-1])
    second = tick(instance, tmp_path, first.cursor)
    (request,) = second.run_requests
    assert (request.job_name, request.run_key, request.partition_key) == (
        "labels",
        f"labels-{label_day}",
        label_day,
    )
    # No sampling weights exist for D (nothing was scored): the lift is not asked for.
    assert selection(request) == ["video_labels_7d"]
    assert json.loads(second.cursor)["labels"] == [label_day]
    assert tick(instance, tmp_path, second.cursor).run_requests == []

    # What the daemon would launch succeeds and writes D's labels.
    result = dg.materialize(
        list(DEFS.assets),
        selection=request.asset_selection,
        partition_key=request.partition_key,
        resources=resources(tmp_path),
        instance=instance,
    )
    assert result.success
    lake = Lake.local(tmp_path)
    labels = lake.read_table(lake.asset_file("video_labels_7d", label_day))
    assert sorted(labels.column("video_id").to_pylist()) == [f"{label_day}-a", f"{label_day}-b"]


def test_labels_bring_the_flywheel_lift_when_the_day_was_scored(tmp_path, instance):
    # A lake with watch events (a lake without any plans its labels from daily stats).
    (tmp_path / "landing" / "watch_events").mkdir(parents=True)
    report(instance, "video_watch_daily", days("2026-01-01", 9))  # partials of days 1..9
    report(instance, "flywheel_sampling_weights", ["2026-01-02"])
    data = tick(instance, tmp_path)
    requests = {r.partition_key: selection(r) for r in by_job(data, "labels")}
    # Day 1's window is days 1..8, day 2's is 2..9; day 3's needs day 10.
    assert requests == {
        "2026-01-01": ["video_labels_7d"],
        "2026-01-02": ["flywheel_lift", "video_labels_7d"],
    }
    report(instance, "video_watch_daily", ["2026-01-10"])
    later = tick(instance, tmp_path, data.cursor)
    assert [r.run_key for r in later.run_requests] == ["labels-2026-01-03"]


# -- schedules -------------------------------------------------------------------------------


def evaluate(schedule, at: dt.datetime) -> list[dg.RunRequest]:
    with dg.build_schedule_context(
        instance=None, scheduled_execution_time=at, repository_def=REPO
    ) as context:
        data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    return list(data.run_requests)


def next_ticks(schedule, after: dt.datetime, n: int) -> list[dt.datetime]:
    # The iterator the scheduler daemon uses for the schedule's cron string and timezone.
    ticks = schedule_execution_time_iterator(
        after.timestamp(), schedule.cron_schedule, schedule.execution_timezone
    )
    return [next(ticks).astimezone(UTC) for _ in range(n)]


def test_retrain_schedule_trains_the_week_that_starts_that_sunday():
    # Ticks every Sunday at 03:00 UTC...
    assert next_ticks(retrain_schedule, dt.datetime(2026, 3, 4, 12, tzinfo=UTC), 2) == [
        dt.datetime(2026, 3, 8, 3, tzinfo=UTC),
        dt.datetime(2026, 3, 15, 3, tzinfo=UTC),
    ]
    # ...and asks for the weekly partition starting that Sunday (it exists: end_offset=1).
    (request,) = evaluate(retrain_schedule, dt.datetime(2026, 3, 8, 3, tzinfo=UTC))
    assert request.partition_key == "2026-03-08"
    assert request.run_key == "retrain-2026-03-08"
    assert request.tags["dagster/partition"] == "2026-03-08"
    window = weekly.time_window_for_partition_key(request.partition_key)
    assert window.start == dt.datetime(2026, 3, 8, tzinfo=UTC)
    assert window.end == dt.datetime(2026, 3, 15, tzinfo=UTC)


def test_daily_schedule_runs_yesterdays_chain_at_two():
    daily_schedule = DEFS.resolve_schedule_def("daily_chain_schedule")
    assert next_ticks(daily_schedule, dt.datetime(2026, 3, 9, 12, tzinfo=UTC), 2) == [
        dt.datetime(2026, 3, 10, 2, tzinfo=UTC),
        dt.datetime(2026, 3, 11, 2, tzinfo=UTC),
    ]
    (request,) = evaluate(daily_schedule, dt.datetime(2026, 3, 10, 2, tzinfo=UTC))
    assert request.job_name == "daily_chain"
    assert request.partition_key == "2026-03-09"
    assert request.tags["dagster/partition"] == "2026-03-09"


# -- a lake without watch events ------------------------------------------------------------------


def test_without_watch_events_labels_wait_for_seven_days_of_daily_stats(tmp_path, instance):
    for day in days("2026-01-01", 3):
        write_day(tmp_path, "videos", day, [video(f"{day}-a", ts(day, 6))])
    stats = Path(tmp_path) / "landing" / "video_daily_stats"
    for day in days("2026-01-01", 8):
        (stats / f"dt={day}").mkdir(parents=True)
        if day != "2026-01-03":  # day 3's rollup has not landed yet
            (stats / f"dt={day}" / "_SUCCESS").touch()
    report(instance, "raw_videos", days("2026-01-01", 3))
    data = tick(instance, tmp_path)
    chain = by_job(data, "daily_chain")
    assert [r.partition_key for r in chain] == days("2026-01-01", 3)
    assert all(
        selection(r)
        == sorted(set(FEATURE_ASSETS) - {"watch_events", "video_watch_daily", "cowatch_pairs"})
        for r in chain
    )
    # Every window D..D+6 of days 1..3 holds day 3: nothing to label yet.
    assert by_job(data, "labels") == []
    (stats / "dt=2026-01-03" / "_SUCCESS").touch()
    later = tick(instance, tmp_path, data.cursor)
    # Day 1's window (1..7) and day 2's (2..8) are in; day 3 needs day 9.
    assert [(r.partition_key, selection(r)) for r in later.run_requests] == [
        ("2026-01-01", ["video_labels_7d"]),
        ("2026-01-02", ["video_labels_7d"]),
    ]
