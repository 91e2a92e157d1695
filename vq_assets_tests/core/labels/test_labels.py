"""Labels against an independent plain-Python reference, edges included (DESIGN §4)."""

import datetime as dt
import math
import random

import pyarrow as pa
import pytest

from vq_assets.core.labels import windows as core
from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.sql import connect
from vq_assets_tests.landing import event, reference_aggregate, ts, video

DAYS = [f"2026-01-{d:02d}" for d in range(1, 13)]


def reference_labels(videos: list[dict], events: list[dict]) -> dict[str, dict]:
    out = {}
    for v in videos:
        c, d = v["created_at"], v["duration_s"]
        inside = [
            e
            for e in events
            if e["video_id"] == v["video_id"] and c <= e["event_ts"] < c + dt.timedelta(days=7)
        ]
        day0 = sum(e["event_ts"] < c + dt.timedelta(hours=24) for e in inside)
        followers = v["creator_followers"]
        out[v["video_id"]] = {
            **reference_aggregate(inside, d),
            "day0_plays": day0,
            "followers": followers,
            # ViraNova: day-0 views / followers + 7-day views / followers; null without followers.
            "virality": day0 / followers + len(inside) / followers if followers else None,
            # Anomalies seen by the label: events before c on c's own day (earlier ones belong
            # to days when the video did not exist yet; they count as unknown-video events).
            "early_events": sum(
                e["video_id"] == v["video_id"]
                and e["event_ts"] < c
                and e["event_ts"].date() == c.date()
                for e in events
            ),
        }
    return out


def random_world(seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    videos, events = [], []
    for i in range(60):
        day = rng.choice(DAYS[:4])
        c = ts(day, rng.uniform(0, 24))
        d = rng.choice([2.0, 3.0, 7.5, 30.0])
        followers = rng.choice([None, 0, 1, 7, 250])
        videos.append(video(f"v{i:03d}", c, d, creator_followers=followers))
        if i % 10 == 0:
            continue  # videos with no plays at all
        for _ in range(rng.randint(1, 25)):
            # A third of the plays on day 0: its edge at c + 24 h is crossed often.
            at = c + dt.timedelta(days=rng.choice([rng.uniform(0.9, 1.1), rng.uniform(-0.2, 8.0)]))
            watch = rng.choice([0.0, 2.999, 3.0, d, d - 1e-9, d + 5, rng.uniform(0, 40)])
            flags = {k: rng.choice([True, False, None]) for k in ("liked", "commented", "shared")}
            events.append(event(f"v{i:03d}", at, watch, user=f"u{rng.randint(0, 9)}", **flags))
        # The exact window edges: an event at c is in, an event at c + 7 days is out; at
        # c + 24 h an event is no longer on day 0.
        events.append(event(f"v{i:03d}", c, 1.0))
        events.append(event(f"v{i:03d}", c + dt.timedelta(days=7), 1.0))
        events.append(event(f"v{i:03d}", c + dt.timedelta(hours=24), 1.0))
    return videos, events


def compute_labels(videos: list[dict], events: list[dict], day: str) -> dict[str, dict]:
    """The production path: per-event-day partials, then the sum for creation day `day`."""
    con = connect()
    partials = []
    for e_day in (core.shift(day, i) for i in range(8)):
        served = [
            v
            for v in videos
            if core.shift(e_day, -7) <= v["created_at"].date().isoformat() <= e_day
        ]
        todays = [e for e in events if e["event_ts"].date().isoformat() == e_day]
        con.register("videos", pa.Table.from_pylist(served, schema=VIDEOS_SCHEMA))
        con.register("events", pa.Table.from_pylist(todays, schema=WATCH_EVENTS_SCHEMA))
        partials.append(core.watch_daily_partials(con, e_day))
    con.register("partials", pa.concat_tables(partials))
    day_videos = [v for v in videos if v["created_at"].date().isoformat() == day]
    con.register("videos", pa.Table.from_pylist(day_videos, schema=VIDEOS_SCHEMA))
    table = core.labels_from_partials(con, day)
    assert table.schema.names[:3] == ["video_id", "creator_id", "created_at"]
    assert table.schema.names == core.LABELS_SCHEMA.names
    return {r.pop("video_id"): r for r in table.to_pylist()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_equal_the_reference_on_random_events(seed):
    videos, events = random_world(seed)
    ref = reference_labels(videos, events)
    for day in DAYS[:4]:
        got = compute_labels(videos, events, day)
        day_ids = {v["video_id"] for v in videos if v["created_at"].date().isoformat() == day}
        assert set(got) == day_ids
        for vid in day_ids:
            for name, want in ref[vid].items():
                have = got[vid][name]
                if want is None:
                    assert have is None, (vid, name)
                else:
                    assert math.isclose(have, want, rel_tol=1e-12, abs_tol=1e-12), (vid, name)


def test_hand_checked_edges():
    c = ts("2026-01-02", 12)
    videos = [video("a", c, 10.0), video("quiet", c, 5.0)]
    events = [
        event("a", c, 3.0, liked=True),  # at c: in; exactly 3.0 s: not a skip
        event("a", c + dt.timedelta(hours=1), 2.9, commented=True),  # skip
        event("a", c + dt.timedelta(days=2), 10.0),  # exactly the duration: full watch
        event("a", c + dt.timedelta(days=7), 50.0),  # c + 7 days: out
        event("a", c - dt.timedelta(seconds=1), 50.0),  # before c: anomaly
    ]
    got = compute_labels(videos, events, "2026-01-02")
    assert got["a"] | {"created_at": None} == {
        "creator_id": "c1",
        "created_at": None,
        "plays": 3,
        "skips": 1,
        "full_watches": 1,
        "avg_watch_time_s": pytest.approx((3.0 + 2.9 + 10.0) / 3),
        "skip_rate": pytest.approx(1 / 3),
        "likes": 1,
        "comments": 1,
        "shares": 0,
        "engagement_rate": pytest.approx(2 / 3),
        "day0_plays": 2,
        "followers": 100,
        "virality": pytest.approx(2 / 100 + 3 / 100),
        "early_events": 1,
    }
    quiet = got["quiet"]
    assert quiet["plays"] == 0 and quiet["skip_rate"] is None
    assert quiet["avg_watch_time_s"] is None and quiet["engagement_rate"] is None
    assert quiet["day0_plays"] == 0 and quiet["virality"] == 0.0  # 0 views of 100 followers


def test_day0_plays_and_virality_by_hand():
    c = ts("2026-01-02", 12)
    just_before = dt.timedelta(hours=24) - dt.timedelta(microseconds=1)
    videos = [
        video("a", c, 10.0, creator_followers=4),
        video("no_followers", c, 10.0, creator_followers=0),
        video("unknown_followers", c, 10.0, creator_followers=None),
        video("late", ts("2026-01-02", 23.5), 10.0, creator_followers=2),
    ]
    events = []
    for vid in ("a", "no_followers", "unknown_followers"):
        events += [
            event(vid, c, 5.0),  # at c: day 0
            event(vid, c + just_before, 5.0),  # the last microsecond of day 0
            event(vid, c + dt.timedelta(hours=24), 5.0),  # exactly c + 24 h: day 1
            event(vid, c + dt.timedelta(days=3), 5.0),
            event(vid, c - dt.timedelta(minutes=1), 5.0),  # before c: neither
        ]
    # Created at 23:30: its day 0 runs to 23:30 the next day, across the calendar day's end
    # (the partials of two event days add up to it).
    late_c = ts("2026-01-02", 23.5)
    events += [event("late", late_c + dt.timedelta(hours=h), 5.0) for h in (0.25, 1, 23, 24, 30)]
    got = compute_labels(videos, events, "2026-01-02")
    assert (got["a"]["plays"], got["a"]["day0_plays"], got["a"]["followers"]) == (4, 2, 4)
    assert got["a"]["virality"] == 2 / 4 + 4 / 4
    for vid in ("no_followers", "unknown_followers"):
        assert (got[vid]["plays"], got[vid]["day0_plays"]) == (4, 2)
        assert got[vid]["virality"] is None, vid  # never a division by 0 or by null
    assert got["no_followers"]["followers"] == 0 and got["unknown_followers"]["followers"] is None
    assert (got["late"]["plays"], got["late"]["day0_plays"]) == (5, 3)
    assert got["late"]["virality"] == 3 / 2 + 5 / 2


def test_creator_features_see_only_closed_windows_and_earlier_videos():
    con = connect()
    day = "2026-01-10"
    history = [
        video("old", ts("2026-01-02", 23.5), creator_id="c1"),  # window closes 01-09 23:30: in
        video("recent", ts("2026-01-03", 0.5), creator_id="c1"),  # closes 01-10 00:30: out
        video("same_day_earlier", ts(day, 1), creator_id="c1"),
    ]
    today = [video("x", ts(day, 5), creator_id="c1"), video("y", ts(day, 0.5), creator_id="c2")]
    labels = pa.Table.from_pylist(
        [
            {
                "video_id": "old",
                "creator_id": "c1",
                "created_at": ts("2026-01-02", 23.5),
                "plays": 10,
                "skips": 4,
                "full_watches": 1,
                "avg_watch_time_s": 5.0,
                "skip_rate": 0.4,
                "likes": 1,
                "comments": 0,
                "shares": 0,
                "engagement_rate": 0.1,
                "early_events": 0,
            },
            {
                "video_id": "recent",
                "creator_id": "c1",
                "created_at": ts("2026-01-03", 0.5),
                "plays": 99,
                "skips": 0,
                "full_watches": 9,
                "avg_watch_time_s": 50.0,
                "skip_rate": 0.0,
                "likes": 9,
                "comments": 9,
                "shares": 9,
                "engagement_rate": 0.2,
                "early_events": 0,
            },
        ],
        schema=core.LABELS_SCHEMA,
    )
    con.register("videos", pa.Table.from_pylist(today, schema=VIDEOS_SCHEMA))
    con.register("history_videos", pa.Table.from_pylist(history + today, schema=VIDEOS_SCHEMA))
    con.register("history_labels", labels)
    rows = {r["video_id"]: r for r in core.creator_features(con, day).to_pylist()}
    x = rows["x"]
    assert x["prior_videos"] == 3  # old, recent, same_day_earlier; not itself
    assert x["prior_labeled"] == 1 and x["prior_mean_skip_rate"] == 0.4
    assert x["prior_mean_plays"] == 10
    assert x["days_active"] == pytest.approx(
        (ts(day, 5) - ts("2026-01-02", 23.5)).total_seconds() / 86400
    )
    assert rows["y"]["prior_videos"] == 0 and rows["y"]["prior_labeled"] == 0
    assert rows["y"]["prior_mean_skip_rate"] is None and rows["y"]["days_active"] == 0
    assert core.point_in_time_violations(con, "f", core.creator_features(con, day), day) == 0


def test_range_rules_cover_day0_and_virality_and_pass_counters_not_kept():
    def row(**kw) -> dict:
        base = {"video_id": "v", "creator_id": "c", "created_at": ts("2026-01-02", 1)}
        good = {"plays": 10, "day0_plays": 4, "followers": 5, "virality": 14 / 5}
        return base | good | kw

    labels = pa.Table.from_pylist(
        [
            row(),  # counters not kept (null): breaks nothing
            row(skips=2, skip_rate=0.2, likes=1, comments=1, engagement_rate=0.2),
            row(day0_plays=11),
            row(virality=-1.0),
            row(followers=0),
            row(followers=None),
            row(skip_rate=0.5),  # a rate without its counter
            row(plays=None),
        ],
        schema=core.LABELS_SCHEMA,
    )
    with connect() as con:
        bad = core.label_range_violations(con, "labels", labels)
    assert bad == {
        "day0_plays > plays": 1,
        "virality negative or not finite": 1,
        "virality without followers": 2,
        "ratio without its counter": 1,
        "plays is null": 1,
    }
