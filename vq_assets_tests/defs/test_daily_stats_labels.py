"""video_labels_7d from video_daily_stats, when a lake has the rollups instead of (or besides)
the raw events."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.labels.daily_stats import daily_stats_from_events, write_daily_stats
from vq_assets.core.lake.contract import VIDEOS, WATCH_EVENTS, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.dagster_util import materialize_days
from vq_assets_tests.defs.test_ingest_labels_chain import DAYS, build_lake


def test_labels_sum_seven_calendar_days_of_daily_stats(tmp_path):
    build_lake(tmp_path)
    lake = Lake.local(tmp_path)
    with connect() as con:
        con.register(
            "videos", pa.concat_tables(validate_day(con, lake, VIDEOS, d).valid for d in DAYS)
        )
        con.register(
            "events", pa.concat_tables(validate_day(con, lake, WATCH_EVENTS, d).valid for d in DAYS)
        )
        write_daily_stats(lake, daily_stats_from_events(con))
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
