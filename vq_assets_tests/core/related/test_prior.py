"""The retrieval-augmented prior on hand-made videos: which neighbours, how they are weighted,
null labels, videos without content, and the corpus window's point in time."""

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.embeddings.pipeline import embeddings_schema
from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.sql import connect
from vq_assets.core.model.retrieval import prior_labels
from vq_assets.core.related.prior import (
    Videos,
    corpus_window,
    cutoff,
    neighbour_prior,
    point_in_time_violations,
    prior_for_day,
)

DAY = "2026-02-10"  # neighbours: created 2026-01-06 .. 2026-02-02 (D-35 .. D-8)


def _t(text: str) -> np.datetime64:
    return np.datetime64(text, "us")


def _videos(ids, created, vectors, **labels) -> Videos:
    """Videos whose every prior label is 1.0 unless given (None entries are null)."""
    n = len(ids)
    given = {k: np.array([np.nan if x is None else x for x in v], float) for k, v in labels.items()}
    return Videos(
        np.array(ids, object),
        np.array([_t(c) for c in created]),
        np.asarray(vectors, np.float32),
        {p.label: given.get(p.label, np.ones(n)) for p in prior_labels()},
    )


def _unit(*x: float) -> list[float]:
    v = np.array(x, float)
    return (v / np.linalg.norm(v)).tolist()


def _row(table: pa.Table, video_id: str) -> dict:
    return next(r for r in table.to_pylist() if r["video_id"] == video_id)


def test_the_k_nearest_labelled_neighbours_weighted_by_softmax_similarity():
    query = _videos(["q"], [f"{DAY}T05:00"], [[1, 0, 0]])
    corpus = _videos(
        ["a", "b", "c", "d"],
        ["2026-02-01T10:00", "2026-01-20T10:00", "2026-02-02T10:00", "2026-01-10T10:00"],
        [[1, 0, 0], _unit(0.8, 0.6, 0), [0, 1, 0], [-1, 0, 0]],  # similarity 1, 0.8, 0, -1
        plays=[9, 99, 999, 9999],
        skip_rate=[None, 0.5, 0.2, 0.9],  # `a` has no plays-based rate
    )
    prior = neighbour_prior(query, corpus, DAY, corpus_days=28, k=2, temperature=0.1)
    row = _row(prior, "q")
    # plays: the 2 nearest are a and b, weights e^(1/0.1) and e^(0.8/0.1), means of log1p.
    w_a, w_b = math.exp(10.0), math.exp(8.0)
    assert row["knn_log1p_plays"] == pytest.approx(
        (w_a * math.log(10) + w_b * math.log(100)) / (w_a + w_b)
    )
    # skip_rate (as it is): `a` lacks it, so the 2 nearest that have it are b and c.
    assert row["knn_skip_rate"] == pytest.approx((w_b * 0.5 + 1.0 * 0.2) / (w_b + 1.0))
    assert row["n_neighbours"] == 2
    assert row["mean_similarity"] == pytest.approx(0.9)
    assert row["max_similarity"] == pytest.approx(1.0)
    # c served skip_rate: it is the newest neighbour used.
    assert row["newest_neighbour_created_at"] == dt.datetime(2026, 2, 2, 10, tzinfo=dt.UTC)
    # A large temperature is the plain k-NN mean.
    flat = _row(neighbour_prior(query, corpus, DAY, corpus_days=28, k=2, temperature=1e6), "q")
    assert flat["knn_log1p_plays"] == pytest.approx((math.log(10) + math.log(100)) / 2)


def test_videos_without_content_labels_no_neighbour_has_and_empty_corpora_are_null():
    query = _videos(["q", "blank"], [f"{DAY}T05:00", f"{DAY}T06:00"], [[1, 0], [0, 0]])
    corpus = _videos(
        ["a", "b", "blank_corpus"],
        ["2026-02-01T00:00"] * 3,
        [[1, 0], [0, 1], [0, 0]],
        likes=[None, None, 5],  # only a video without content has it
    )
    prior = neighbour_prior(query, corpus, DAY, corpus_days=28, k=20)
    q, blank = _row(prior, "q"), _row(prior, "blank")
    assert q["n_neighbours"] == 2 and q["knn_log1p_likes"] is None
    assert q["knn_log1p_plays"] == pytest.approx(math.log(2))
    assert blank["has_content"] is False and blank["n_neighbours"] == 0
    assert all(blank[c] is None for c in prior.column_names if c.startswith("knn_"))
    assert blank["newest_neighbour_created_at"] is None
    assert prior["video_id"].to_pylist() == ["q", "blank"]  # every video of the day, in order
    nothing = neighbour_prior(query, corpus.subset(np.arange(0)), DAY, corpus_days=28)
    assert nothing["n_neighbours"].to_pylist() == [0, 0]
    assert nothing["knn_log1p_plays"].null_count == 2


def test_the_corpus_is_days_d_minus_35_to_d_minus_8_and_never_d_minus_7():
    assert cutoff(DAY) == dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
    assert corpus_window(DAY, 28) == (dt.datetime(2026, 1, 6, tzinfo=dt.UTC), cutoff(DAY))
    query = _videos(["q"], [f"{DAY}T00:00"], [[1, 0]])
    corpus = _videos(
        ["d7", "d8", "first", "before"],
        # D-7 at midnight: its window [c, c + 7 days) closed exactly as D began, but its label
        # day is not complete until D is over: never a neighbour. The nearest of all.
        ["2026-02-03T00:00:00", "2026-02-02T23:59:59", "2026-01-06T00:00:00", "2026-01-05T23:59"],
        [[1, 0], _unit(0.6, 0.8), _unit(0.6, 0.8), [1, 0]],
        plays=[1000, 0, 0, 1000],
    )
    row = _row(neighbour_prior(query, corpus, DAY, corpus_days=28, k=5), "q")
    assert row["n_neighbours"] == 2  # d8 and first; neither d7 nor `before`
    assert row["knn_log1p_plays"] == 0.0
    assert row["max_similarity"] == pytest.approx(0.6)
    assert row["newest_neighbour_created_at"] == dt.datetime(2026, 2, 2, 23, 59, 59, tzinfo=dt.UTC)


def test_point_in_time_violations_count_neighbours_of_d_minus_7_or_later():
    at = [cutoff(DAY) - dt.timedelta(microseconds=1), cutoff(DAY), None]
    prior = pa.table({"newest_neighbour_created_at": pa.array(at, pa.timestamp("us", tz="UTC"))})
    assert point_in_time_violations(prior, DAY) == 1


def _lake_views(con) -> None:
    """Views as the asset registers them: one query video without embeddings, corpus videos of
    today's encoder and of another one, and one created on D-7."""

    def video(vid: str, created: str) -> dict:
        at = dt.datetime.fromisoformat(created).replace(tzinfo=dt.UTC)
        return {"video_id": vid, "creator_id": "c", "created_at": at, "duration_s": 10.0}

    videos = [
        video("q", f"{DAY}T08:00"),
        video("q_no_embedding", f"{DAY}T09:00"),
        video("near", "2026-02-01T08:00"),
        video("other_encoder", "2026-02-01T09:00"),
        video("d7", "2026-02-03T01:00"),
    ]
    con.register("videos", pa.Table.from_pylist(videos, VIDEOS_SCHEMA))
    schema = embeddings_schema(2, 2)
    emb = [
        ("q", [1.0, 0.0], [0.0, 1.0], "enc@1"),
        ("near", [1.0, 0.0], [0.0, 1.0], "enc@1"),
        ("other_encoder", [1.0, 0.0], [0.0, 1.0], "enc@2"),
        ("d7", [1.0, 0.0], [0.0, 1.0], "enc@1"),
    ]
    rows = [
        {"video_id": v, "image_emb": i, "text_emb": t, "has_image": True, "has_text": True}
        | {"encoder": e, "media_status": "ok"}
        for v, i, t, e in emb
    ]
    con.register("embeddings", pa.Table.from_pylist(rows, schema))
    labels = [
        {**{k: v[k] for k in ("video_id", "creator_id", "created_at")}, "plays": plays}
        for v, plays in zip(videos[2:], (9, 99, 999), strict=True)
    ]
    con.register("labels", pa.Table.from_pylist(labels, LABELS_SCHEMA))


def test_prior_for_day_reads_the_lake_views():
    with connect() as con:
        _lake_views(con)
        prior, summary = prior_for_day(con, DAY, corpus_days=28, k=5)
    q = _row(prior, "q")
    assert q["n_neighbours"] == 1 and q["max_similarity"] == pytest.approx(1.0)
    assert q["knn_log1p_plays"] == pytest.approx(math.log(10))  # `near` only
    assert q["knn_skip_rate"] is None  # no label row keeps it
    assert _row(prior, "q_no_embedding")["n_neighbours"] == 0
    assert point_in_time_violations(prior, DAY) == 0
    assert (summary.videos, summary.videos_without_content) == (2, 1)
    assert (summary.corpus_videos, summary.corpus_skipped) == (1, 1)  # other_encoder left out
    assert summary.mean_neighbours == 0.5
