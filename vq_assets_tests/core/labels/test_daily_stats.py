"""`video_daily_stats`: its contract, and labels over 7 calendar days against plain Python."""

import datetime as dt
import math
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vq_assets.core.labels import daily_stats as core
from vq_assets.core.labels.windows import LABELS_SCHEMA, shift
from vq_assets.core.lake.contract import (
    VIDEOS,
    VIDEOS_SCHEMA,
    WATCH_EVENTS,
    ContractError,
    validate_day,
)
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
    """Events at or after c on the calendar days c.date() .. c.date() + 6; day 0 is the
    calendar day c.date()."""
    c = v["created_at"]
    last = c.date() + dt.timedelta(days=6)
    inside = [
        e
        for e in events
        if e["video_id"] == v["video_id"] and c <= e["event_ts"] and e["event_ts"].date() <= last
    ]
    day0 = sum(e["event_ts"].date() == c.date() for e in inside)
    followers = v["creator_followers"]
    return {
        **reference_aggregate(inside, v["duration_s"]),
        "day0_plays": day0,
        "virality": day0 / followers + len(inside) / followers if followers else None,
    }


def exact_reference(v: dict, events: list[dict]) -> dict:
    """DESIGN §4: events in [c, c + 7 days); day 0 is [c, c + 24 h)."""
    c = v["created_at"]
    inside = [
        e
        for e in events
        if e["video_id"] == v["video_id"] and c <= e["event_ts"] < c + dt.timedelta(days=7)
    ]
    day0 = sum(e["event_ts"] < c + dt.timedelta(hours=24) for e in inside)
    followers = v["creator_followers"]
    return {
        **reference_aggregate(inside, v["duration_s"]),
        "day0_plays": day0,
        "virality": day0 / followers + len(inside) / followers if followers else None,
    }


def random_world(seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    videos, events = [], []
    for i in range(40):
        c = ts(rng.choice(DAYS[:3]), rng.uniform(0, 24))
        followers = rng.choice([None, 0, 3, 100])
        videos.append(
            video(f"v{i:03d}", c, rng.choice([2.0, 7.5, 30.0]), creator_followers=followers)
        )
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
        ({"plays": None}, "plays is missing"),
        ({"plays": -1, "skips": 0, "full_watches": 0}, "plays is not >= 0"),
        ({"likes": -1}, "likes is not >= 0"),
        ({"shares": -2}, "shares is not >= 0"),
        ({"skips": 11}, "skips > plays"),
        ({"full_watches": 11}, "full_watches > plays"),
        ({"likes": 11}, "likes > plays"),
        ({"comments": 11}, "comments > plays"),
        ({"shares": 11}, "shares > plays"),
        ({"watch_time_s_sum": -0.5}, "watch_time_s_sum is not >= 0"),
        ({"watch_time_s_sum": float("nan")}, "watch_time_s_sum is not >= 0"),
        ({"watch_time_s_sum": float("inf")}, "watch_time_s_sum is not finite"),
        # A second, different row for the pair: which one is right is unknown.
        ({"video_id": "v1", "plays": 12}, "duplicate video_id within the day"),
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


def test_a_counter_not_kept_is_null_not_a_broken_rule(tmp_path):
    nulls = {c: None for c in core.OPTIONAL_COLUMNS}
    write_stats(tmp_path, [stats_row("v1") | nulls, stats_row("v2") | {"likes": None}])
    with connect() as con:
        result = core.validate_daily_stats_day(con, Lake.local(tmp_path), DAY)
    assert result.rejects.num_rows == 0
    rows = result.valid.to_pylist()
    assert all(rows[0][c] is None for c in core.OPTIONAL_COLUMNS) and rows[0]["plays"] == 10
    assert rows[1]["likes"] is None and rows[1]["skips"] == 3


def test_exact_copies_are_dropped_and_every_input_row_is_accounted_for(tmp_path):
    rows = [stats_row("v1"), stats_row("v1"), stats_row("v2"), stats_row("v2") | {"plays": 11}]
    write_stats(tmp_path, [*rows, stats_row("v3") | {"plays": None}])
    with connect() as con:
        result = core.validate_daily_stats_day(con, Lake.local(tmp_path), DAY)
    assert result.duplicates_dropped == 1  # the exact copy of v1
    assert result.valid.column("video_id").to_pylist() == ["v1", "v2"]
    assert sorted(result.rejects.column("reason").to_pylist()) == [
        "duplicate video_id within the day",
        "plays is missing",
    ]
    assert (
        result.rows_read
        == 5
        == (result.valid.num_rows + result.rejects.num_rows + result.duplicates_dropped)
    )


def test_a_file_may_leave_out_the_counters_it_does_not_keep(tmp_path):
    lake = Lake.local(tmp_path)
    directory = lake.landing_dir(core.TABLE, DAY)
    Path(directory).mkdir(parents=True)
    plays_only = pa.table(
        {"video_id": ["v1", "v2"], "day": [dt.date(2026, 1, 5)] * 2, "plays": [4, 0]}
    )
    pq.write_table(plays_only, f"{directory}/a.parquet")
    # Another file of the day keeps likes, as an all-null column of Arrow's null type.
    pq.write_table(
        pa.table(
            {
                "video_id": ["v3"],
                "day": [dt.date(2026, 1, 5)],
                "plays": pa.array([2], pa.int32()),
                "likes": pa.nulls(1),
            }
        ),
        f"{directory}/b.parquet",
    )
    lake.write_marker(directory)
    with connect() as con:
        result = core.validate_daily_stats_day(con, lake, DAY)
    assert result.rejects.num_rows == 0 and result.valid.schema == core.DAILY_STATS_SCHEMA
    assert result.valid.column("plays").to_pylist() == [4, 0, 2]
    for c in core.OPTIONAL_COLUMNS:
        assert result.valid.column(c).null_count == 3, c


def test_file_level_problems_fail_the_day_naming_the_file(tmp_path):
    lake = Lake.local(tmp_path)
    write_stats(tmp_path, [stats_row()], marker=False)
    with connect() as con, pytest.raises(ContractError, match="_SUCCESS"):
        core.validate_daily_stats_day(con, lake, DAY)
    directory = lake.landing_dir(core.TABLE, DAY)
    lake.write_marker(directory)
    # plays is required: a file without it fails the day, naming the file and the column.
    pq.write_table(
        pa.Table.from_pylist([stats_row()]).drop_columns(["plays"]), f"{directory}/extra.parquet"
    )
    with connect() as con, pytest.raises(ContractError, match=r"extra\.parquet.*'plays'"):
        core.validate_daily_stats_day(con, lake, DAY)
    # A kept counter of the wrong type fails it too: optional is not "anything goes".
    pq.write_table(
        pa.Table.from_pylist([stats_row() | {"likes": "many"}]), f"{directory}/extra.parquet"
    )
    with connect() as con, pytest.raises(ContractError, match=r"extra\.parquet.*'likes'"):
        core.validate_daily_stats_day(con, lake, DAY)


# -- labels from partial counters ---------------------------------------------------------------

D0 = "2026-01-05"


def labels_of(rows: list[dict], videos: list[dict], day: str = D0) -> dict[str, dict]:
    """labels_from_daily_stats over `rows` (stats_row dicts, `day` given as an ISO string)."""
    stats = [r | {"day": dt.date.fromisoformat(r["day"])} for r in rows]
    with connect() as con:
        con.register("videos", pa.Table.from_pylist(videos, schema=VIDEOS_SCHEMA))
        con.register("daily_stats", pa.Table.from_pylist(stats, schema=core.DAILY_STATS_SCHEMA))
        table = core.labels_from_daily_stats(con, day)
    assert table.schema == LABELS_SCHEMA
    return {r["video_id"]: r for r in table.to_pylist()}


def plays_only(vid: str, day: str, plays: int) -> dict:
    return {"video_id": vid, "day": day, "plays": plays} | {c: None for c in core.OPTIONAL_COLUMNS}


COUNTER_LABELS = ("skips", "full_watches", "likes", "comments", "shares")
RATIO_LABELS = ("avg_watch_time_s", "skip_rate", "engagement_rate")


def test_plays_only_counters_give_plays_day0_and_virality_and_null_for_the_rest():
    videos = [
        video("a", ts(D0, 22), creator_followers=10),
        video("b", ts(D0, 1), creator_followers=None),
        video("quiet", ts(D0, 5), creator_followers=10),
    ]
    rows = [
        plays_only("a", D0, 3),  # day 0 = the creation calendar day, even from 22:00 on
        plays_only("a", shift(D0, 1), 5),
        plays_only("a", shift(D0, 6), 2),  # the window's last calendar day
        plays_only("a", shift(D0, 7), 100),  # past it
        plays_only("b", shift(D0, 2), 4),  # no row of day 0
    ]
    got = labels_of(rows, videos)
    a = got["a"]
    assert (a["plays"], a["day0_plays"], a["followers"]) == (10, 3, 10)
    assert a["virality"] == 3 / 10 + 10 / 10
    assert (got["b"]["plays"], got["b"]["day0_plays"], got["b"]["virality"]) == (4, 0, None)
    quiet = got["quiet"]
    assert (quiet["plays"], quiet["day0_plays"], quiet["virality"]) == (0, 0, 0.0)
    for vid, row in got.items():
        # Not kept by the source: null, never 0, with or without rows of the video.
        for name in COUNTER_LABELS + RATIO_LABELS:
            assert row[name] is None, (vid, name)
        assert row["early_events"] == 0


def test_a_counter_null_on_one_row_nulls_that_label_only():
    videos = [video("a", ts(D0, 8)), video("b", ts(D0, 9)), video("quiet", ts(D0, 10))]
    rows = [
        {**stats_row("a"), "day": D0},
        {**stats_row("a"), "day": shift(D0, 1), "likes": None, "watch_time_s_sum": None},
        {**stats_row("b"), "day": shift(D0, 3)},
    ]
    got = labels_of(rows, videos)
    a, b, quiet = got["a"], got["b"], got["quiet"]
    # a: likes and watch time unknown on one of its days -> a sum would undercount: null.
    assert a["likes"] is None and a["engagement_rate"] is None
    assert a["avg_watch_time_s"] is None
    assert (a["plays"], a["skips"], a["full_watches"], a["comments"]) == (20, 6, 4, 0)
    assert a["skip_rate"] == 6 / 20
    # b: every counter known.
    assert (b["likes"], b["engagement_rate"], b["avg_watch_time_s"]) == (1, 0.1, 5.55)
    # quiet: no rows; the source keeps these counters, so 0 plays means 0 of each.
    for name in COUNTER_LABELS:
        assert quiet[name] == 0, name
    assert all(quiet[name] is None for name in RATIO_LABELS)  # no plays: no ratio


def test_quarantined_rows_are_weighed_against_the_days_videos():
    videos = [video("a", ts(D0, 8)), video("b", ts(D0, 9))]
    rejects = pa.Table.from_pylist(
        [
            {"video_id": "a", "plays": 7, "reason": "likes > plays"},
            {"video_id": "a", "plays": None, "reason": "plays is missing"},
            {"video_id": "other", "plays": 50, "reason": "plays is not >= 0"},
            {"video_id": None, "plays": 3, "reason": "video_id is missing"},
            {"video_id": "b", "plays": -4, "reason": "plays is not >= 0"},
        ]
    )
    with connect() as con:
        con.register("videos", pa.Table.from_pylist(videos, schema=VIDEOS_SCHEMA))
        lost = core.quarantined_rows(con, rejects)
        assert core.quarantined_rows(con, rejects.slice(0, 0)) == core.QuarantinedRows()
    assert lost.loses_plays
    assert (lost.rows, lost.plays, lost.unattributed_rows) == (5, 60, 1)
    assert (lost.rows_of_day_videos, lost.plays_of_day_videos) == (3, 7)
    assert lost.reasons_of_day_videos == {
        "likes > plays": 1,
        "plays is missing": 1,
        "plays is not >= 0": 1,
    }
    with connect() as con:
        con.register("videos", pa.Table.from_pylist(videos[:0], schema=VIDEOS_SCHEMA))
        assert not core.quarantined_rows(con, rejects).loses_plays


def test_labels_refuse_videos_of_another_day():
    with connect() as con:
        con.register("videos", pa.Table.from_pylist([video("x", ts(DAY, 1))]))
        con.register("daily_stats", core.DAILY_STATS_SCHEMA.empty_table())
        with pytest.raises(ValueError, match="not created on 2026-01-04"):
            core.labels_from_daily_stats(con, "2026-01-04")
