"""`video_daily_stats`: its contract, and labels over 7 calendar days against plain Python."""

import datetime as dt
import math
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.labels import daily_stats as core
from vq_assets.core.labels.windows import LABELS_SCHEMA, shift
from vq_assets.core.lake.contract import VIDEOS, WATCH_EVENTS, ContractError, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import Lake
from vq_assets_tests.landing import (
    event,
    events_by_day,
    reference_aggregate,
    ts,
    video,
    write_day,
)

DAYS = [f"2026-01-{d:02d}" for d in range(1, 14)]
LATE = "late"  # created at 23:00: its exact window reaches 23 h into the 8th calendar day
MIDNIGHT = "midnight"  # created at 00:00: both windows are the same 7 x 24 h
QUIET = "quiet"  # never played: ratios are null


def calendar_reference(v: dict, events: list[dict]) -> dict:
    """Events at or after c on the calendar days c.date() .. c.date() + 6."""
    c = v["created_at"]
    last = c.date() + dt.timedelta(days=6)
    inside = [
        e
        for e in events
        if e["video_id"] == v["video_id"] and c <= e["event_ts"] and e["event_ts"].date() <= last
    ]
    return reference_aggregate(inside, v["duration_s"])


def exact_reference(v: dict, events: list[dict]) -> dict:
    """DESIGN §4: events in [c, c + 7 days)."""
    c = v["created_at"]
    inside = [
        e
        for e in events
        if e["video_id"] == v["video_id"] and c <= e["event_ts"] < c + dt.timedelta(days=7)
    ]
    return reference_aggregate(inside, v["duration_s"])


def random_world(seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    videos, events = [], []
    for i in range(40):
        c = ts(rng.choice(DAYS[:3]), rng.uniform(0, 24))
        videos.append(video(f"v{i:03d}", c, rng.choice([2.0, 7.5, 30.0])))
    videos.append(video(LATE, ts(DAYS[1], 23), 10.0))
    videos.append(video(QUIET, ts(DAYS[1], 12), 10.0))
    videos.append(video(MIDNIGHT, ts(DAYS[1]), 10.0))
    for v in videos:
        if v["video_id"] == QUIET:
            continue
        c, d = v["created_at"], v["duration_s"]
        for _ in range(rng.randint(0, 30)):
            at = c + dt.timedelta(days=rng.uniform(-0.3, 9.0))
            watch = rng.choice([0.0, 2.999, 3.0, d, rng.uniform(0, 40)])
            flags = {k: rng.choice([True, False, None]) for k in ("liked", "commented", "shared")}
            events.append(event(v["video_id"], at, watch, user=f"u{rng.randint(0, 9)}", **flags))
    late_c = ts(DAYS[1], 23)
    events += [
        event(LATE, late_c + dt.timedelta(hours=h), 5.0, liked=True)
        # 30 min after c (both windows); day D+6 (both); D+7 00:30 and 22:00 (exact only)
        for h in (0.5, 6 * 24 - 0.5, 6 * 24 + 1.5, 7 * 24 - 1)
    ]
    events.append(event(MIDNIGHT, ts(DAYS[1]) + dt.timedelta(days=7), 5.0))  # out of both
    return videos, events


def land_world(lake_root, videos: list[dict], events: list[dict]) -> None:
    for day in DAYS:
        created = [v for v in videos if v["created_at"].date().isoformat() == day]
        write_day(lake_root, "videos", day, created)
        write_day(lake_root, "watch_events", day, events_by_day(events).get(day, []))


@pytest.mark.parametrize("seed", [0, 1])
def test_daily_stats_labels_equal_calendar_recomputation_and_differ_from_exact(tmp_path, seed):
    videos, events = random_world(seed)
    land_world(tmp_path, videos, events)
    lake = Lake.local(tmp_path)
    with connect() as con:
        # The landing days, read back through the contract as the ingest assets do.
        landed_videos = {d: validate_day(con, lake, VIDEOS, d).valid for d in DAYS}
        con.register("videos", pa.concat_tables(landed_videos.values()))
        con.register(
            "events",
            pa.concat_tables(validate_day(con, lake, WATCH_EVENTS, d).valid for d in DAYS),
        )
        stats_days = core.write_daily_stats(lake, core.daily_stats_from_events(con))
        assert set(stats_days) <= set(DAYS)
        landed = {}
        for day in stats_days:
            checked = core.validate_daily_stats_day(con, lake, day)
            assert checked.rejects.num_rows == 0 and checked.rows_read == checked.valid.num_rows
            landed[day] = checked.valid
        empty = core.DAILY_STATS_SCHEMA.empty_table()
        got = {}
        for day in DAYS[:3]:
            created = [v for v in videos if v["created_at"].date().isoformat() == day]
            con.register("videos", landed_videos[day])
            window = [landed.get(shift(day, i), empty) for i in range(7)]
            con.register("daily_stats", pa.concat_tables(window))
            table = core.labels_from_daily_stats(con, day)
            assert table.schema == LABELS_SCHEMA
            got |= {r["video_id"]: r for r in table.to_pylist()}
            for v in created:
                row = got[v["video_id"]]
                assert row["creator_id"] == v["creator_id"] and row["early_events"] == 0
                for name, want in calendar_reference(v, events).items():
                    have = row[name]
                    if want is None:
                        assert have is None, (v["video_id"], name)
                    else:
                        assert math.isclose(have, want, rel_tol=1e-12), (v["video_id"], name)
                if v["video_id"] == MIDNIGHT:
                    assert exact_reference(v, events) == calendar_reference(v, events)

    assert set(got) == {v["video_id"] for v in videos}
    assert got[QUIET]["plays"] == 0 and got[QUIET]["skip_rate"] is None
    late = next(v for v in videos if v["video_id"] == LATE)
    exact = exact_reference(late, events)
    # The two D+7 events count in the exact window only: the calendar labels are smaller.
    assert exact["plays"] - got[LATE]["plays"] >= 2
    assert exact["likes"] - got[LATE]["likes"] >= 2


DAY = "2026-01-05"


def stats_row(vid: str = "v1", **kw) -> dict:
    row = {
        "video_id": vid,
        "day": dt.date.fromisoformat(DAY),
        "plays": 10,
        "skips": 3,
        "full_watches": 2,
        "watch_time_s_sum": 55.5,
        "likes": 1,
        "comments": 0,
        "shares": 0,
    }
    return row | kw


def write_stats(lake_root, rows: list[dict], *, marker: bool = True) -> None:
    lake = Lake.local(lake_root)
    directory = lake.landing_dir(core.TABLE, DAY)
    lake.write_table(directory, pa.Table.from_pylist(rows, schema=core.DAILY_STATS_SCHEMA))
    if marker:
        lake.write_marker(directory)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"video_id": None}, "video_id is missing"),
        ({"day": None}, "day is missing"),
        ({"day": dt.date(2026, 1, 6)}, "day outside the partition"),
        ({"plays": -1, "skips": 0, "full_watches": 0}, "plays is not >= 0"),
        ({"likes": None}, "likes is not >= 0"),
        ({"skips": 11}, "skips > plays"),
        ({"full_watches": 11}, "full_watches > plays"),
        ({"watch_time_s_sum": -0.5}, "watch_time_s_sum is not >= 0"),
        ({"watch_time_s_sum": float("nan")}, "watch_time_s_sum is not >= 0"),
        ({"watch_time_s_sum": float("inf")}, "watch_time_s_sum is not finite"),
        ({"video_id": "v1"}, "duplicate video_id within the day"),
    ],
)
def test_each_daily_stats_rule_quarantines_with_its_reason(tmp_path, override, reason):
    write_stats(tmp_path, [stats_row("v1"), stats_row("v2") | override])
    with connect() as con:
        result = core.validate_daily_stats_day(con, Lake.local(tmp_path), DAY)
    assert result.valid.column("video_id").to_pylist() == ["v1"]
    assert result.rejects.num_rows == 1 and result.quarantine_share == 0.5
    assert reason in result.rejects.column("reason")[0].as_py()
    assert result.rejects.column("source_row")[0].as_py() == 1


def test_file_level_problems_fail_the_day_naming_the_file(tmp_path):
    lake = Lake.local(tmp_path)
    write_stats(tmp_path, [stats_row()], marker=False)
    with connect() as con, pytest.raises(ContractError, match="_SUCCESS"):
        core.validate_daily_stats_day(con, lake, DAY)
    directory = lake.landing_dir(core.TABLE, DAY)
    lake.write_marker(directory)
    pq.write_table(
        pa.Table.from_pylist([stats_row()]).drop_columns(["shares"]), f"{directory}/extra.parquet"
    )
    with connect() as con, pytest.raises(ContractError, match=r"extra\.parquet.*'shares'"):
        core.validate_daily_stats_day(con, lake, DAY)


def test_labels_refuse_videos_of_another_day():
    with connect() as con:
        con.register("videos", pa.Table.from_pylist([video("x", ts(DAY, 1))]))
        con.register("daily_stats", core.DAILY_STATS_SCHEMA.empty_table())
        with pytest.raises(ValueError, match="not created on 2026-01-04"):
            core.labels_from_daily_stats(con, "2026-01-04")
