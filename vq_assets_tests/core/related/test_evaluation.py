"""Offline metrics of related lists, by hand and on the synthetic world."""

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.related.cowatch import COWATCH_SCHEMA
from vq_assets.core.related.evaluation import (
    REALISED_SCHEMA,
    compare_methods,
    random_vectors,
    realised_cowatch,
    retrieval_metrics,
    same_topic_share,
)
from vq_assets.core.related.search import RELATED_SCHEMA
from vq_assets_tests.core.related.synthetic import make_world

RELATED = pa.Table.from_pylist(
    [
        {"video_id": "q1", "related_video_id": "x", "rank": 1, "score": 0.9},
        {"video_id": "q1", "related_video_id": "y", "rank": 2, "score": 0.8},
        {"video_id": "q1", "related_video_id": "z", "rank": 3, "score": 0.7},
        {"video_id": "q2", "related_video_id": "w", "rank": 1, "score": 0.5},
        {"video_id": "q3", "related_video_id": "x", "rank": 1, "score": 0.5},
    ],
    schema=RELATED_SCHEMA,
)
REALISED = pa.Table.from_pylist(
    [
        {"video_id": "q1", "related_video_id": "y", "gain": 2.0},
        {"video_id": "q1", "related_video_id": "u", "gain": 1.0},  # never retrieved
        {"video_id": "q2", "related_video_id": "w", "gain": 1.0},
        {"video_id": "q9", "related_video_id": "w", "gain": 1.0},  # not a query here
    ],
    schema=REALISED_SCHEMA,
)
L3 = math.log2(3)


@pytest.mark.parametrize(
    ("k", "graded", "recall", "ndcg"),
    [
        (3, False, (0.5 + 1) / 2, ((1 / L3) / (1 + 1 / L3) + 1) / 2),
        (3, True, (0.5 + 1) / 2, ((2 / L3) / (2 + 1 / L3) + 1) / 2),
        (1, False, 0.5, 0.5),  # q1's first hit is at rank 2
    ],
)
def test_metrics_by_hand(k, graded, recall, ndcg):
    m = retrieval_metrics(RELATED, REALISED, k, graded=graded)
    assert m.recall == pytest.approx(recall)
    assert m.ndcg == pytest.approx(ndcg)
    assert (m.queries, m.queries_without_cowatch) == (2, 1)


def test_no_realised_cowatch_gives_nan_not_a_crash():
    m = retrieval_metrics(RELATED, REALISED_SCHEMA.empty_table(), 20)
    assert math.isnan(m.recall) and math.isnan(m.ndcg) and m.queries == 0


def test_realised_cowatch_both_orientations_and_eligibility():
    day = dt.date(2026, 1, 9)
    first = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)
    rows = [
        ("a", "q", 2),  # q is video_b here: still q's co-watch
        ("q", "z", 1),
        ("q", "flagged", 4),
        ("old", "q", 7),  # not a candidate (older than 28 days, say)
        ("a", "q", 3),  # the same pair on another event day: summed
    ]
    pairs = pa.Table.from_pylist(
        [
            {
                "event_day": day,
                "video_a": a,
                "video_b": b,
                "users": u,
                "co_views": u,
                "first_ts": first,
            }
            for a, b, u in rows
        ],
        schema=COWATCH_SCHEMA,
    )
    got = realised_cowatch(pairs, ["q"], ["a", "z", "q", "flagged"], exclude_ids={"flagged"})
    assert sorted(got.to_pylist(), key=lambda r: r["related_video_id"]) == [
        {"video_id": "q", "related_video_id": "a", "gain": 5.0},
        {"video_id": "q", "related_video_id": "z", "gain": 1.0},
    ]


def test_same_topic_share():
    topics = {"q1": "cats", "x": "cats", "y": "dogs", "z": None, "q2": "dogs", "w": "dogs"}
    # k=3: q1 -> x (same), y (other), z (unknown: not counted); q2 -> w (same); q3 unknown.
    assert same_topic_share(RELATED, topics, k=3) == pytest.approx(2 / 3)
    assert same_topic_share(RELATED, topics, k=1) == pytest.approx(1.0)
    assert math.isnan(same_topic_share(RELATED, {}, k=3))


def test_compare_methods_orders_oracle_above_random():
    world = make_world(seed=3, n=240, n_train=180, topics=8, per_video=4)
    n = len(world.topic)
    ids = [f"v{i:03d}" for i in range(n)]
    pairs = pa.Table.from_pylist(
        [
            {
                "event_day": dt.date(2026, 1, 9),
                "video_a": min(ids[a], ids[b]),
                "video_b": max(ids[a], ids[b]),
                "users": 1,
                "co_views": 1,
                "first_ts": dt.datetime(2026, 1, 9, tzinfo=dt.UTC),
            }
            for a, b in zip(*world.val, strict=True)
            if a != b
        ],
        schema=COWATCH_SCHEMA,
    )
    oracle = np.eye(8, dtype=np.float32)[world.topic] + 0.05 * random_vectors(n, 8, seed=1)
    # Two held-out "days": each ranks its queries among the videos up to it.
    groups = [(np.arange(180, 210), np.arange(0, 210)), (np.arange(210, 240), np.arange(0, 240))]
    table = compare_methods(
        ids,
        {"oracle": oracle, "content": world.content.features, "random": random_vectors(n, 64)},
        groups,
        pairs,
        k=20,
        exclude_ids={ids[0], ids[1]},
    )
    got = {r["method"]: r for r in table.to_pylist()}
    assert got["oracle"]["recall"] > max(got["content"]["recall"], got["random"]["recall"])
    assert got["oracle"]["ndcg"] > got["random"]["ndcg"]
    assert got["oracle"]["recall"] > 0.3
    assert got["oracle"]["queries"] == got["random"]["queries"] > 50
