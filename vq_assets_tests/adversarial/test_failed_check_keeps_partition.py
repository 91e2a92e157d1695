"""A failed blocking check must not replace the good partition (DESIGN §2, issue 15 point 9).

`watch_events` once went from 1,232 rows to 942 although its run failed on `quarantine_share`:
Dagster hands the Output to the IO manager before it sees the check yielded after it. An asset
now tells the lake on the Output (`metadata={PUBLISH: passed}`); the lake keeps the previous
version and files the rejected one under `.rejected/`. The asset here is a stand-in built in the
test, so that only the real LakeIOManager and lake are under test.
"""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster_aws.s3 import S3Resource

from vq_assets.core.lake.store import Lake
from vq_assets.resources import PUBLISH, LakeIOManager, LakeResource

DAY = "2026-01-05"
daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")


class Rows(dg.Config):
    rows: int
    max_rows: int = 1000


@dg.asset(
    partitions_def=daily,
    io_manager_key="lake_io",
    check_specs=[dg.AssetCheckSpec("row_limit", asset="guarded", blocking=True)],
)
def guarded(config: Rows):
    passed = config.rows <= config.max_rows
    yield dg.Output(pa.table({"x": list(range(config.rows))}), metadata={PUBLISH: passed})
    yield dg.AssetCheckResult(check_name="row_limit", passed=passed)


def _materialize(root: Path, instance: dg.DagsterInstance, rows: int) -> dg.ExecuteInProcessResult:
    lake = LakeResource(root=str(root), s3=S3Resource())
    return dg.materialize(
        [guarded],
        partition_key=DAY,
        resources={"lake_io": LakeIOManager(lake=lake)},
        run_config={"ops": {"guarded": {"config": {"rows": rows}}}},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_failed_blocking_check_keeps_the_previous_partition(tmp_path, instance):
    lake = Lake.local(tmp_path)
    assert _materialize(tmp_path, instance, rows=1232).success is False  # over the limit
    # Never published: no partition, and no `dt=` folder that a listing could take for one.
    assert not lake.exists(lake.asset_file("guarded", DAY))
    assert lake.list_days(lake.asset_dir("guarded")) == []

    assert _materialize(tmp_path, instance, rows=942).success
    good = lake.read_table(lake.asset_file("guarded", DAY))

    failed = _materialize(tmp_path, instance, rows=1500)
    assert not failed.success
    assert [c.check_name for c in failed.get_asset_check_evaluations()] == ["row_limit"]
    assert lake.read_table(lake.asset_file("guarded", DAY)).equals(good)  # 942 rows, intact
    rejected = f"{lake.rejected_dir(lake.asset_dir('guarded', DAY))}/part-0.parquet"
    assert lake.read_table(rejected).num_rows == 1500  # kept for inspection
    (mat,) = failed.asset_materializations_for_node("guarded")
    assert mat.metadata["path"].value == rejected  # the UI points at what was rejected
    assert lake.list_days(lake.asset_dir("guarded")) == [DAY]

    # A passing re-run publishes as before.
    assert _materialize(tmp_path, instance, rows=10).success
    assert lake.read_table(lake.asset_file("guarded", DAY)).num_rows == 10


def test_watch_events_keep_their_partition_when_the_quarantine_check_fails(tmp_path: Path):
    """The reported case, on the real asset: a re-landed day with 30% bad rows fails
    `quarantine_share` and leaves the day's good partition and its quarantine as they were."""
    from vq_assets_tests.dagster_util import materialize_days
    from vq_assets_tests.landing import event, ts, write_day

    day = "2026-01-02"
    good = [event("v1", ts(day, 1 + i / 100), 5.0, user=f"u{i}") for i in range(20)]
    write_day(tmp_path, "watch_events", day, good)
    instance = dg.DagsterInstance.ephemeral()
    materialize_days(["watch_events"], [day], tmp_path, instance)
    lake = Lake.local(tmp_path)
    before = lake.read_table(lake.asset_file("watch_events", day))
    bad = good[:14] + [event("v1", ts(day, 2), -1.0, user=f"x{i}") for i in range(6)]
    write_day(tmp_path, "watch_events", day, bad)
    (result,) = materialize_days(["watch_events"], [day], tmp_path, instance, raise_on_error=False)
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [False]
    after = lake.read_table(lake.asset_file("watch_events", day))
    assert after.equals(before) and after.num_rows == 20
    quarantine = lake.list_files(lake.quarantine_dir("watch_events", day))
    assert sum(lake.read_table(f).num_rows for f in quarantine) == 0  # the good day's (none)
