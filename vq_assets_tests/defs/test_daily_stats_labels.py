"""video_labels_7d from video_daily_stats, when a lake has the rollups instead of (or besides)
the raw events."""

import datetime as dt

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.labels import daily_stats
from vq_assets.core.labels.daily_stats import daily_stats_from_events, write_daily_stats
from vq_assets.core.lake.contract import VIDEOS, WATCH_EVENTS, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.dagster_util import materialize_days
from vq_assets_tests.defs.test_ingest_labels_chain import DAYS, build_lake


def _land_stats_from_events(root) -> Lake:
    build_lake(root)
    lake = Lake.local(root)
    with connect() as con:
        con.register(
            "videos", pa.concat_tables(validate_day(con, lake, VIDEOS, d).valid for d in DAYS)
        )
        con.register(
            "events", pa.concat_tables(validate_day(con, lake, WATCH_EVENTS, d).valid for d in DAYS)
        )
        write_daily_stats(lake, daily_stats_from_events(con))
    return lake


def test_labels_sum_seven_calendar_days_of_daily_stats(tmp_path):
    lake = _land_stats_from_events(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_days(["raw_videos"], DAYS[:1], tmp_path, instance)
        (result,) = materialize_days(["video_labels_7d"], DAYS[:1], tmp_path, instance)
    meta = result.asset_materializations_for_node("video_labels_7d")[0].metadata
    assert "video_daily_stats" in meta["label_source"].value
    labels = {
        r["video_id"]: r
        for r in pq.read_table(lake.asset_file("video_labels_7d", DAYS[0])).to_pylist()
    }
    # v0a (created 06:00 on day 1) has one event on each of days 1..10: the 7 calendar days
    # count 7, where the exact window [c, c + 7 days) counts 8 (day 8 at 03:00 is inside it).
    assert labels["v0a"]["plays"] == 7 and labels["v0a"]["skips"] == 7
    assert labels["v0b"]["full_watches"] == labels["v0b"]["plays"] == 7
    assert labels["v0a"]["avg_watch_time_s"] == 2.0


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    (found,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name]
    return found


def test_a_quarantined_day_of_the_window_fails_the_blocking_check_and_keeps_the_labels(tmp_path):
    lake = _land_stats_from_events(tmp_path)
    day = DAYS[0]
    with dg.DagsterInstance.ephemeral() as instance:
        materialize_days(["raw_videos"], [day], tmp_path, instance)
        (good,) = materialize_days(["video_labels_7d"], [day], tmp_path, instance)
        assert _check(good, "no_plays_quarantined").passed
        before = lake.read_table(lake.asset_file("video_labels_7d", day))
        meta = good.asset_materializations_for_node("video_labels_7d")[0].metadata
        assert meta["source_rows_quarantined"].value == 0
        assert meta["source_rows_read"].value == meta["source_rows_valid"].value > 0

        # Day 3 of the window re-lands with every row broken (a counter export gone wrong):
        # before the check, the label quietly lost day 3's plays.
        third = dt.date.fromisoformat(DAYS[2])
        broken = lake.read_table(lake.landing_dir(daily_stats.TABLE, DAYS[2]) + "/part-0.parquet")
        assert broken.num_rows > 0
        broken = broken.set_column(
            broken.schema.get_field_index("plays"), "plays", pa.nulls(broken.num_rows, pa.int64())
        )
        lake.write_table(lake.landing_dir(daily_stats.TABLE, DAYS[2]), broken)
        assert broken.column("day").to_pylist()[0] == third
        (bad,) = materialize_days(
            ["video_labels_7d"], [day], tmp_path, instance, raise_on_error=False
        )
    assert not bad.success
    check = _check(bad, "no_plays_quarantined")
    assert not check.passed
    ours = {r["video_id"] for r in before.to_pylist()}
    of_day = sum(v in ours for v in broken.column("video_id").to_pylist())
    assert of_day > 0
    assert check.metadata["rows_of_these_videos"].value == of_day
    assert check.metadata["reasons"].value == {"plays is missing": of_day}
    meta = bad.asset_materializations_for_node("video_labels_7d")[0].metadata
    assert meta["source_rows_quarantined"].value == broken.num_rows
    # Every input row is valid, quarantined or a counted duplicate.
    assert meta["source_rows_read"].value == (
        meta["source_rows_valid"].value
        + meta["source_rows_quarantined"].value
        + meta["source_duplicates_dropped"].value
    )
    # Blocking: the labels that lost plays are not published; the good version stays.
    assert lake.read_table(lake.asset_file("video_labels_7d", day)).equals(before)
    quarantine = lake.list_files(lake.quarantine_dir(daily_stats.TABLE, DAYS[2]))
    assert sum(lake.read_table(f).num_rows for f in quarantine) == broken.num_rows
