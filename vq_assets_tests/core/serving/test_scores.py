"""score_videos: every catalogue column, the 0-100 scores, the popularity class columns."""

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.labels.windows import LABEL_COLUMNS
from vq_assets.core.model import tasks
from vq_assets.core.model.features import joined_batches, joined_rows, to_dataset
from vq_assets.core.model.inference import LoadedModel
from vq_assets.core.model.popularity import CLASSES
from vq_assets.core.model.retrieval import prior_columns, prior_labels
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.train import train_model
from vq_assets.core.serving.scores import score_batches, score_videos


def _rows(n: int, seed: int, with_labels: bool) -> pa.Table:
    """Rows shaped like `features.joined_rows`, labels drawn from the creator's followers."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    followers = rng.poisson(200, n)
    cols = {
        "video_id": [f"v{seed}-{i}" for i in range(n)],
        "creator_id": [f"c{i % 17}" for i in range(n)],
        "created_at": pa.array(
            [start + dt.timedelta(minutes=7 * i) for i in range(n)], pa.timestamp("us", tz="UTC")
        ),
        "duration_s": rng.uniform(5, 60, n),
        "language": ["en"] * n,
        "image_emb": pa.array(rng.normal(size=(n, 4)).tolist(), pa.list_(pa.float32(), 4)),
        "text_emb": pa.array(rng.normal(size=(n, 4)).tolist(), pa.list_(pa.float32(), 4)),
        "prior_videos": rng.integers(0, 5, n),
        "days_active": rng.uniform(0, 30, n),
        "prior_labeled": rng.integers(0, 5, n),
        **{f"prior_mean_{c}": rng.uniform(0, 1, n) for c in LABEL_COLUMNS},
        "followers": followers,
    }
    if with_labels:
        plays = rng.poisson(followers / 10)
        likes = rng.binomial(plays, 0.1)
        cols |= {
            "plays": plays,
            "skips": rng.binomial(plays, 0.3),
            "full_watches": rng.binomial(plays, 0.2),
            "avg_watch_time_s": rng.uniform(1, 20, n),
            "skip_rate": rng.uniform(0, 1, n),
            "likes": likes,
            "comments": rng.binomial(plays, 0.02),
            "shares": rng.binomial(plays, 0.01),
            "engagement_rate": np.full(n, np.nan),  # this platform keeps no like counter...
            "day0_plays": rng.binomial(plays, 0.5),
            "virality": plays / followers,
        }
    return pa.table(cols)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    data = to_dataset(_rows(400, 0, with_labels=True))
    split = np.array(["train"] * 300 + ["validation"] * 100)
    result = train_model(
        data,
        split,
        tuple(data.features),
        ModelShape(width=8, mlp=(16,), members=1, cross_rank=4),
        TrainSettings(max_epochs=2, patience=1),
    )
    return LoadedModel(result.model, result.model.config, result.normalizer)


def test_scores_carry_every_catalogue_column_and_null_for_a_task_left_out(model) -> None:
    scores = score_videos(_rows(50, 1, with_labels=False), model, model_version=3)
    assert "engagement_rate" not in model.config.tasks  # ...so the model has no such head
    for task in tasks.catalogue():
        column = scores[task.prediction]
        if task.name == "engagement_rate":
            assert column.null_count == 50
        else:
            assert column.null_count == 0, task.name
    for task in (t for t in tasks.catalogue() if t.score_0_100):
        values = scores[task.score_column].to_numpy(zero_copy_only=False)
        if task.name == "engagement_rate":
            assert scores[task.score_column].null_count == 50
            continue
        # percentile within the day: 0 for the lowest, 100 for the highest, unless tied (a
        # count head clamped at 0 ties the videos it predicts below nothing)
        pred = scores[task.prediction].to_numpy()
        assert values.min() == 0.0 or (pred == pred.min()).sum() > 1, task.name
        assert values.max() == 100.0 or (pred == pred.max()).sum() > 1, task.name
        assert values.max() - values.min() > 50.0, task.name
        # the 0-100 score orders videos exactly as the prediction does
        order = np.argsort(pred, kind="stable")
        assert (np.diff(values[order]) >= 0).all()
    probs = np.stack([scores[f"pred_popularity_p{k}"].to_numpy() for k in range(CLASSES)], 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert scores["pred_popularity_class"].type == pa.int64()
    assert scores["pred_popularity_class"].to_pylist() == probs.argmax(axis=1).tolist()
    assert np.isfinite(scores["quality_score"].to_numpy()).all()
    assert set(scores["model_version"].to_pylist()) == {3}


def test_scoring_in_batches_equals_scoring_the_day_at_once(model) -> None:
    rows = _rows(120, 2, with_labels=False)
    whole = score_videos(rows, model, model_version=1)
    batched = score_batches((rows.slice(i, 25) for i in range(0, 120, 25)), model, 1)
    assert batched.schema == whole.schema
    for name in whole.column_names:
        a, b = whole[name].to_pylist(), batched[name].to_pylist()
        if pa.types.is_floating(whole.schema.field(name).type):
            np.testing.assert_allclose(np.array(a, float), np.array(b, float), rtol=1e-5, atol=1e-5)
        else:
            assert a == b, name
    empty = score_batches(iter(()), model, 1)
    assert empty.num_rows == 0 and empty.schema == whole.schema


def _views(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> None:
    """Views `videos`, `embeddings`, `creator` holding `rows` split as the lake holds them,
    one creator row missing (the inner join drops that video)."""
    con.register(
        "videos",
        rows.select(
            ["video_id", "creator_id", "created_at", "duration_s", "language"]
        ).append_column("caption", pa.nulls(rows.num_rows, pa.string())),
    )
    emb = rows.select(["video_id", "image_emb", "text_emb"])
    con.register("embeddings", emb.append_column("media_status", pa.array(["ok"] * rows.num_rows)))
    creator_cols = [
        "video_id",
        "prior_videos",
        "days_active",
        "prior_labeled",
        *(f"prior_mean_{c}" for c in LABEL_COLUMNS),
        "followers",
    ]
    con.register("creator", rows.select(creator_cols).slice(1))


def test_joined_batches_stream_the_same_rows_and_leave_the_connection_as_it_was() -> None:
    rows = _rows(90, 5, with_labels=False)
    with duckdb.connect() as con:
        _views(con, rows)
        whole = joined_rows(con, with_labels=False)
        batches = list(joined_batches(con, with_labels=False, batch_rows=20))
        assert whole.num_rows == 89
        key = [("created_at", "ascending"), ("video_id", "ascending")]
        for b in batches:
            assert b.num_rows <= 20 and b.equals(b.sort_by(key))
        assert pa.concat_tables(batches).sort_by(key).equals(whole)
        # Stopping early still restores the optimizer and frees the connection.
        stream = joined_batches(con, with_labels=False, batch_rows=20)
        next(stream)
        stream.close()
        assert con.sql("SELECT current_setting('disabled_optimizers')").fetchall() == [("",)]


def _prior(rows: pa.Table) -> pa.Table:
    """A `retrieval_prior` table for `rows` less its first two videos; the third found no
    neighbour (nulls, as for a video without content)."""
    n = rows.num_rows - 2
    rng = np.random.default_rng(9)
    found = np.arange(n) != 0
    cols = {
        "video_id": rows["video_id"].slice(2),
        "n_neighbours": pa.array(np.where(found, 20, 0), pa.int32()),
        **{
            c: pa.array(rng.uniform(0, 1, n), pa.float64(), mask=~found)
            for c in prior_columns()
            if c != "n_neighbours"
        },
    }
    return pa.table(cols)


def test_the_prior_is_left_joined_and_its_gaps_become_zeros_and_missing() -> None:
    rows = _rows(30, 6, with_labels=False)
    with duckdb.connect() as con:
        _views(con, rows)
        con.register("prior", _prior(rows))
        joined = joined_rows(con, with_labels=False, with_prior=True)
        plain = joined_rows(con, with_labels=False)
    assert joined["video_id"].to_pylist() == plain["video_id"].to_pylist()  # no row dropped
    group = to_dataset(joined).features["retrieval"]
    assert group.dtype == np.float32 and group.shape == (29, len(prior_columns()) + 1)
    assert np.isfinite(group).all()
    missing = group[:, len(prior_labels())]
    # The creator join drops video 0; video 1 has no prior row, video 2 no neighbour.
    assert missing.tolist() == [1.0, 1.0] + [0.0] * 27
    assert not group[:2, : len(prior_labels())].any()
    assert "retrieval" not in to_dataset(plain).features


def test_a_model_without_the_retrieval_group_scores_rows_joined_with_the_prior(model) -> None:
    assert "retrieval" not in model.config.groups  # trained on rows without the prior
    rows = _rows(40, 7, with_labels=False)
    with duckdb.connect() as con:
        _views(con, rows)
        con.register("prior", _prior(rows))
        with_prior = score_batches(
            joined_batches(con, with_labels=False, batch_rows=16, with_prior=True), model, 1
        )
        without = score_batches(joined_batches(con, with_labels=False, batch_rows=16), model, 1)
    assert with_prior.sort_by("video_id").equals(without.sort_by("video_id"))


def test_an_ensemble_scores_its_spread_and_a_single_network_leaves_it_null(model) -> None:
    data = to_dataset(_rows(300, 8, with_labels=True))
    result = train_model(
        data,
        np.array(["train"] * 220 + ["validation"] * 80),
        tuple(data.features),
        ModelShape(width=8, mlp=(16,), members=3, cross_rank=4),
        TrainSettings(max_epochs=2, patience=1),
    )
    ensemble = LoadedModel(result.model, result.model.config, result.normalizer)
    rows = _rows(60, 9, with_labels=False)
    scores = score_videos(rows, ensemble, model_version=1)
    sd = scores["quality_score_sd"].to_numpy()
    assert np.isfinite(sd).all() and (sd > 0).all()  # independently seeded members disagree
    # Batching does not change the spread: it is on the whole day's scale.
    batched = score_batches((rows.slice(i, 25) for i in range(0, 60, 25)), ensemble, 1)
    np.testing.assert_allclose(batched["quality_score_sd"].to_numpy(), sd, rtol=1e-4, atol=1e-6)
    single = score_videos(rows, model, model_version=1)
    assert single["quality_score_sd"].null_count == 60
