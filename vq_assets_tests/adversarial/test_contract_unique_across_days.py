"""Issue 15.7: `video_id` is unique across all ingested days, whatever order they land in.

Only earlier days used to be checked, so a day that landed late duplicated ids of later days
silently. The id is now looked up in every other ingested `raw_videos` partition (only the
`video_id` column is scanned); the day ingested first keeps the row.
"""

from vq_assets.core.lake.contract import VIDEOS, register_ingested_ids, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import ts, video, write_day

EARLY, LATE = "2026-01-04", "2026-01-05"


def _ingest(lake: Lake, day: str):
    """What `raw_videos` does for one day: check against the other days, write the valid rows."""
    with connect() as con:
        register_ingested_ids(con, lake, "seen", "raw_videos", except_day=day)
        result = validate_day(con, lake, VIDEOS, day, seen_video_ids="seen")
    lake.write_table(lake.asset_dir("raw_videos", day), result.valid)
    return result


def test_late_landing_earlier_day_is_checked_against_later_days(tmp_path):
    lake = Lake.local(tmp_path)
    write_day(tmp_path, "videos", LATE, [video("a", ts(LATE, 1)), video("b", ts(LATE, 2))])
    write_day(tmp_path, "videos", EARLY, [video("a", ts(EARLY, 1)), video("c", ts(EARLY, 2))])
    later = _ingest(lake, LATE)  # the later day is ingested first
    assert later.valid.num_rows == 2
    early = _ingest(lake, EARLY)
    assert early.valid.column("video_id").to_pylist() == ["c"]
    assert early.rejects.column("video_id").to_pylist() == ["a"]
    assert early.rejects.column("reason").to_pylist() == [f"video_id already ingested on {LATE}"]
    assert early.rows_read == early.valid.num_rows + early.rejects.num_rows
    # Re-running either day changes nothing: a day never sees its own partition.
    assert _ingest(lake, LATE).valid.num_rows == 2
    rerun = _ingest(lake, EARLY)
    assert rerun.valid.column("video_id").to_pylist() == ["c"]
    assert rerun.rejects.num_rows == 1


def test_in_date_order_names_the_earlier_day(tmp_path):
    lake = Lake.local(tmp_path)
    write_day(tmp_path, "videos", EARLY, [video("a", ts(EARLY, 1))])
    write_day(tmp_path, "videos", LATE, [video("a", ts(LATE, 1)), video("a", ts(LATE, 2))])
    _ingest(lake, EARLY)
    late = _ingest(lake, LATE)
    assert late.valid.num_rows == 0
    assert late.rejects.column("reason").to_pylist() == [
        f"video_id already ingested on {EARLY}",
        f"duplicate video_id within the day; video_id already ingested on {EARLY}",
    ]


def test_stray_and_unwritten_partitions_are_not_read(tmp_path):
    lake = Lake.local(tmp_path)
    stray = tmp_path / "assets" / "raw_videos" / "dt=2026-01-03.bak"
    stray.mkdir(parents=True)
    (stray / "part-0.parquet").write_bytes(b"not parquet")
    (tmp_path / "assets" / "raw_videos" / "dt=2026-01-02").mkdir()  # a write killed early
    write_day(tmp_path, "videos", LATE, [video("a", ts(LATE, 1))])
    assert _ingest(lake, LATE).valid.num_rows == 1
