"""cowatch_pairs on hand-built event days and against a plain-Python reference (DESIGN §11)."""

import datetime as dt
import itertools
import random

import pyarrow as pa
import pytest

from vq_assets.core.lake.contract import WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.sql import connect
from vq_assets.core.related.cowatch import (
    COWATCH_SCHEMA,
    cowatch_pairs,
    cowatch_sql,
    pair_index,
)
from vq_assets_tests.landing import event, ts

DAY = "2026-01-05"


def at(hours: float, minutes: float = 0.0, seconds: float = 0.0) -> dt.datetime:
    return ts(DAY, hours) + dt.timedelta(minutes=minutes, seconds=seconds)


def run(events: list[dict], **kw) -> pa.Table:
    con = connect()
    con.register("events", pa.Table.from_pylist(events, schema=WATCH_EVENTS_SCHEMA))
    return cowatch_pairs(con, DAY, **kw)


def by_pair(table: pa.Table) -> dict[tuple[str, str], dict]:
    return {(r["video_a"], r["video_b"]): r for r in table.to_pylist()}


def test_hand_built_day():
    events = [
        # u1: vA, then vB exactly 30 min later (in), vC 30 min 1 s after vA (out vs vA, in vs vB).
        event("vA", at(10), 5.0, user="u1"),
        event("vB", at(10, 30), 10.0, user="u1"),
        event("vC", at(10, 30, 1), 4.0, user="u1"),
        # u2: vB before vA (canonical order still vA < vB), and vA re-watched: 2 co-views.
        event("vB", at(12), 8.0, user="u2"),
        event("vA", at(12, 10), 8.0, user="u2"),
        event("vA", at(12, 20), 8.0, user="u2"),
        # u3: a skip (< 3 s) next to vB makes no pair; 3.0 s exactly is a view.
        event("vA", at(13), 2.999, user="u3"),
        event("vB", at(13, 5), 10.0, user="u3"),
        event("vD", at(14), 3.0, user="u4"),
        event("vE", at(14, 1), 3.0, user="u4"),
        # Day edges: the view may hold other days; a pair across midnight is not this day's.
        event("vF", ts(DAY) - dt.timedelta(minutes=1), 9.0, user="u5"),
        event("vG", ts(DAY), 9.0, user="u5"),
        event("vH", ts(DAY) + dt.timedelta(minutes=5), 9.0, user="u5"),
        event("vJ", ts(DAY) + dt.timedelta(days=1, minutes=-1), 9.0, user="u6"),
        event("vK", ts(DAY) + dt.timedelta(days=1), 9.0, user="u6"),
    ]
    table = run(events, window_minutes=30)
    assert table.schema == COWATCH_SCHEMA
    got = by_pair(table)
    assert set(got) == {("vA", "vB"), ("vB", "vC"), ("vD", "vE"), ("vG", "vH")}
    ab = got[("vA", "vB")]
    assert (ab["users"], ab["co_views"]) == (2, 3)
    # First observable when u1's second view landed, at 10:30, not at u2's 12:10.
    assert ab["first_ts"] == at(10, 30)
    assert got[("vB", "vC")]["first_ts"] == at(10, 30, 1)
    assert all(r["event_day"] == dt.date(2026, 1, 5) for r in table.to_pylist())
    assert all(a < b for a, b in got)
    assert table.column("video_a").to_pylist() == sorted(table.column("video_a").to_pylist())


def test_window_boundary_is_inclusive_and_configurable():
    events = [
        event("v1", at(9), 5.0, user="u"),
        event("v2", at(9, 10), 5.0, user="u"),
        event("v3", at(9, 10, 1), 5.0, user="u"),
    ]
    assert set(by_pair(run(events, window_minutes=10))) == {("v1", "v2"), ("v2", "v3")}
    assert set(by_pair(run(events, window_minutes=11))) == {
        ("v1", "v2"),
        ("v1", "v3"),
        ("v2", "v3"),
    }


def test_heavy_users_are_capped_at_their_first_views():
    bot = [event(f"b{i:02d}", at(8, i), 60.0, user="bot") for i in range(12)]
    human = [event("b00", at(9), 5.0, user="h"), event("b11", at(9, 1), 5.0, user="h")]
    got = by_pair(run(bot + human, window_minutes=60, max_videos_per_user=4))
    bot_pairs = set(itertools.combinations([f"b{i:02d}" for i in range(4)], 2))
    assert set(got) == bot_pairs | {("b00", "b11")}
    assert all(r["users"] == 1 for r in got.values())


def reference(events: list[dict], window: dt.timedelta, cap: int) -> dict:
    """Plain Python: the same rules, spelled out."""
    start = ts(DAY)
    views = [
        e
        for e in events
        if start <= e["event_ts"] < start + dt.timedelta(days=1) and e["watch_time_s"] >= 3.0
    ]
    by_user: dict[str, list[dict]] = {}
    for e in sorted(views, key=lambda e: (e["event_ts"], e["video_id"])):
        by_user.setdefault(e["user_id"], []).append(e)
    out: dict[tuple[str, str], dict] = {}
    for user, vs in by_user.items():
        for x, y in itertools.combinations(vs[:cap], 2):
            if x["video_id"] == y["video_id"] or abs(x["event_ts"] - y["event_ts"]) > window:
                continue
            key = tuple(sorted((x["video_id"], y["video_id"])))
            r = out.setdefault(key, {"users": set(), "co_views": 0, "first_ts": None})
            r["users"].add(user)
            r["co_views"] += 1
            seen = max(x["event_ts"], y["event_ts"])
            r["first_ts"] = seen if r["first_ts"] is None else min(r["first_ts"], seen)
    return {k: (len(v["users"]), v["co_views"], v["first_ts"]) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_days(seed):
    rng = random.Random(seed)
    events = []
    for _ in range(400):
        # Whole minutes, so the window's edge is hit exactly now and then.
        when = ts(DAY) + dt.timedelta(minutes=rng.randint(-30, 24 * 60 + 30))
        events.append(
            event(
                f"v{rng.randint(0, 14)}",
                when,
                rng.choice([0.0, 2.5, 3.0, 12.0]),
                user=f"u{rng.randint(0, 9)}",
            )
        )
    got = {
        (r["video_a"], r["video_b"]): (r["users"], r["co_views"], r["first_ts"])
        for r in run(events, window_minutes=45, max_videos_per_user=25).to_pylist()
    }
    want = reference(events, dt.timedelta(minutes=45), 25)
    assert got == want
    assert len(want) > 20  # the world is dense enough to test something


def test_one_scan_of_the_events():
    con = connect()
    con.sql(
        "CREATE TABLE raw_events (video_id VARCHAR, user_id VARCHAR, event_ts TIMESTAMPTZ, "
        "watch_time_s DOUBLE, liked BOOLEAN, commented BOOLEAN, shared BOOLEAN)"
    )
    # Rows, so the optimiser cannot fold the plan into an empty result.
    con.sql(
        "INSERT INTO raw_events VALUES ('a', 'u', TIMESTAMPTZ '2026-01-05 10:00:00', 5, "
        "NULL, NULL, NULL), ('b', 'u', TIMESTAMPTZ '2026-01-05 10:01:00', 5, NULL, NULL, NULL)"
    )
    con.sql("CREATE VIEW events AS SELECT * FROM raw_events")
    plan = "\n".join(row[1] for row in con.sql("EXPLAIN " + cowatch_sql(DAY, 30, 50)).fetchall())
    assert plan.count("raw_events") == 1


@pytest.mark.parametrize(
    "kw",
    [
        {"event_day": "2026-01-05' OR 1=1 --"},
        {"window_minutes": 0},
        {"window_minutes": 2.5},
        {"max_videos_per_user": -1},
        {"max_videos_per_user": "3; DROP TABLE x"},
    ],
)
def test_refuses_values_that_would_enter_sql(kw):
    args = {"event_day": DAY, "window_minutes": 30, "max_videos_per_user": 10, **kw}
    with pytest.raises((ValueError, TypeError)):
        cowatch_sql(**args)


def test_pair_index_sums_days_cuts_at_time_and_counts_unknown():
    def row(day, a, b, users, first):
        return {
            "event_day": dt.date.fromisoformat(day),
            "video_a": a,
            "video_b": b,
            "users": users,
            "co_views": users,
            "first_ts": ts(day, first),
        }

    pairs = pa.Table.from_pylist(
        [
            row("2026-01-05", "a", "b", 2, 10),
            row("2026-01-06", "a", "b", 3, 1),
            row("2026-01-06", "b", "c", 1, 2),
            row("2026-01-07", "a", "c", 5, 0),  # after the cutoff
            row("2026-01-05", "a", "zz", 4, 3),  # zz has no content row
        ],
        schema=COWATCH_SCHEMA,
    )
    ids = ["c", "b", "a"]
    got = pair_index(pairs, ids, before=ts("2026-01-07"))
    triples = sorted(zip(got.idx_a.tolist(), got.idx_b.tolist(), got.weight.tolist(), strict=True))
    assert triples == [(1, 0, 1.0), (2, 1, 5.0)]  # (b, c) and (a, b) = 2 + 3
    assert got.unknown == 1
    assert len(pair_index(pairs, ids).idx_a) == 3  # no cutoff: (a, c) counts too
