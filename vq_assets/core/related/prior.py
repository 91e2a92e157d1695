"""The retrieval-augmented prior (DESIGN §11): for each video created on day D, the 7-day
outcomes of its nearest earlier videos, weighted by similarity.

Similarity is the cosine of the encoders' own content vectors (``content.raw_vectors``): frozen
encoders and content only, so the similarity itself learns nothing from outcomes. Neighbours
are only the videos created on days D-7-corpus_days .. D-8: the window [c, c + 7 days) of each
closed before D began. A video of D-7 is never one: its window was still open at D's start
(and its label partition is complete only once D is over).

Per label (``model.retrieval.prior_labels``), the k nearest neighbours *that have it* (a rate is
null without plays, a counter a platform does not keep is null everywhere) are averaged with
softmax weights, ``exp(sim / temperature)`` normalised over those k: positive however the
similarities fall, the nearest count most when the k-th is much farther, and a large
temperature is the plain k-NN mean. Beside the means: ``n_neighbours`` and the mean and max
similarity of the k nearest labelled videos, and ``newest_neighbour_created_at`` over every
neighbour used (the point-in-time evidence). A video without a content vector gets nulls and
``n_neighbours`` 0, as does every video of a day with no labelled earlier video.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.windows import WINDOW_DAYS
from vq_assets.core.lake.sql import sql_date
from vq_assets.core.model.retrieval import prior_labels
from vq_assets.core.related.content import content_from_table, list_width, raw_vectors
from vq_assets.core.related.search import Method, top_k_related

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.1
_NO_TIME = np.iinfo(np.int64).min


def cutoff(day: str) -> dt.datetime:
    """The start of D-7: every neighbour of a video created on `day` was created before it."""
    start = dt.date.fromisoformat(sql_date(day)) - dt.timedelta(days=WINDOW_DAYS)
    return dt.datetime.combine(start, dt.time(), dt.UTC)


def corpus_window(day: str, corpus_days: int) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of the creation times of the neighbours of `day`'s videos: the
    `corpus_days` days D-7-corpus_days .. D-8."""
    if corpus_days < 1:
        raise ValueError(f"corpus_days must be >= 1, got {corpus_days}")
    end = cutoff(day)
    return end - dt.timedelta(days=corpus_days), end


@dataclass(frozen=True)
class Videos:
    """Videos with their raw content vectors (a zero row: no content) and, for a corpus, their
    labels in natural units (NaN = null)."""

    ids: np.ndarray  # [n] str
    created_at: np.ndarray  # [n] datetime64[us], UTC
    vectors: np.ndarray  # [n, d] float32
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def has_content(self) -> np.ndarray:
        return np.abs(self.vectors).sum(axis=1) > 0

    def subset(self, rows: np.ndarray) -> Videos:
        return Videos(
            self.ids[rows],
            self.created_at[rows],
            self.vectors[rows],
            {k: v[rows] for k, v in self.labels.items()},
        )


def _utc64(t: dt.datetime) -> np.datetime64:
    return np.datetime64(t.replace(tzinfo=None), "us")


def _search(query: Videos, corpus: Videos, k: int, method: Method) -> tuple[np.ndarray, np.ndarray]:
    """scores [q, k] and corpus positions [q, k] (-1 where a query has fewer neighbours) of
    every query's k nearest corpus rows."""
    scores = np.full((len(query.ids), k), -np.inf)
    positions = np.full((len(query.ids), k), -1, np.int64)
    if len(corpus.ids) == 0 or len(query.ids) == 0:
        return scores, positions
    related = top_k_related(
        query.ids.tolist(), query.vectors, corpus.ids.tolist(), corpus.vectors, k, method=method
    )
    row = pc.index_in(related["video_id"], pa.array(query.ids.tolist(), pa.string()))
    col = pc.index_in(related["related_video_id"], pa.array(corpus.ids.tolist(), pa.string()))
    rank = related["rank"].to_numpy() - 1
    row, col = row.to_numpy(), col.to_numpy()
    scores[row, rank] = related["score"].to_numpy()
    positions[row, rank] = col
    return scores, positions


def _softmax_mean(
    scores: np.ndarray, positions: np.ndarray, values: np.ndarray, temperature: float
) -> np.ndarray:
    """Per row, the mean of ``values[positions]`` weighted by softmax(scores / temperature)
    over its neighbours; NaN for a row without any."""
    found = positions >= 0
    z = np.where(found, scores / temperature, -np.inf)
    top = z.max(axis=1, keepdims=True)
    w = np.where(found, np.exp(z - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = w.sum(axis=1)
    picked = np.where(found, values[np.maximum(positions, 0)], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w * picked).sum(axis=1) / total, np.nan)


def neighbour_prior(
    query: Videos,
    corpus: Videos,
    day: str,
    *,
    corpus_days: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    method: Method = "auto",
) -> pa.Table:
    """One row per query video (created on `day`): ``video_id``, ``created_at``,
    ``has_content``, ``n_neighbours``, ``mean_similarity``, ``max_similarity``,
    ``newest_neighbour_created_at`` and one column per ``prior_labels()`` (see the module
    docstring). Corpus rows outside ``corpus_window(day, corpus_days)`` or without content are
    never neighbours, whatever `corpus` holds."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got {k} and {temperature}")
    start, end = (_utc64(t) for t in corpus_window(day, corpus_days))
    inside = (corpus.created_at >= start) & (corpus.created_at < end)
    corpus = corpus.subset(np.flatnonzero(inside & corpus.has_content))
    has = query.has_content
    asking = query.subset(np.flatnonzero(has))
    corpus_times = corpus.created_at.astype("datetime64[us]").astype(np.int64)
    newest = np.full(len(asking.ids), _NO_TIME, np.int64)
    searched: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def nearest(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest among the corpus rows of `mask` (one search per distinct mask)."""
        key = np.packbits(mask).tobytes()
        if key not in searched:
            rows = np.flatnonzero(mask)
            scores, positions = _search(asking, corpus.subset(rows), k, method)
            found = positions >= 0
            positions[found] = rows[positions[found]]
            used = np.full(positions.shape, _NO_TIME)
            used[found] = corpus_times[positions[found]]
            np.maximum(newest, used.max(axis=1), out=newest)
            searched[key] = scores, positions
        return searched[key]

    columns: dict[str, np.ndarray] = {}
    any_label = np.zeros(len(corpus.ids), bool)
    for p in prior_labels():
        values = np.asarray(corpus.labels[p.label], np.float64)
        values = np.log1p(values) if p.log1p else values
        labelled = np.isfinite(values)
        any_label |= labelled
        mean = np.full(len(asking.ids), np.nan)
        if labelled.any():
            mean = _softmax_mean(*nearest(labelled), values, temperature)
        columns[p.column] = mean
    scores, positions = nearest(any_label)
    found = positions >= 0
    count = found.sum(axis=1)
    with np.errstate(invalid="ignore"):
        mean_sim = np.where(found, scores, 0.0).sum(axis=1) / count
    stats = {
        "n_neighbours": count,
        "mean_similarity": mean_sim,
        "max_similarity": np.where(count > 0, scores[:, 0], np.nan),
    }
    return _prior_table(query, has, stats, newest, columns)


def _prior_table(
    query: Videos,
    has: np.ndarray,
    stats: dict[str, np.ndarray],
    newest: np.ndarray,
    columns: dict[str, np.ndarray],
) -> pa.Table:
    """The output rows: every query video, nulls where it has no content or no neighbour."""
    n = len(query.ids)

    def spread(values: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(n, fill)
        out[has] = values
        return out

    count = spread(stats["n_neighbours"], 0).astype(np.int32)
    times = spread(newest, _NO_TIME).astype(np.int64)
    data = {
        "video_id": pa.array(query.ids.tolist(), pa.string()),
        "created_at": pa.array(query.created_at, pa.timestamp("us", tz="UTC")),
        "has_content": pa.array(has),
        "n_neighbours": pa.array(count, pa.int32()),
        **{
            name: _nullable(spread(stats[name], np.nan))
            for name in ("mean_similarity", "max_similarity")
        },
        "newest_neighbour_created_at": pa.array(
            times, pa.timestamp("us", tz="UTC"), mask=times == _NO_TIME
        ),
        **{name: _nullable(spread(v, np.nan)) for name, v in columns.items()},
    }
    return pa.table(data)


def _nullable(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


@dataclass(frozen=True)
class PriorSummary:
    """What a day's prior was made from, for the asset's metadata."""

    videos: int
    videos_without_content: int
    corpus_videos: int  # labelled earlier videos with a content vector of today's encoder
    corpus_skipped: int  # labelled videos of the window left out: no vector, or another encoder
    mean_neighbours: float


def _created_between(first: str, end: str) -> str:
    """SQL: `v` created on or after day `first` and before day `end`."""
    return (
        f"v.created_at >= TIMESTAMPTZ '{sql_date(first)}' "
        f"AND v.created_at < TIMESTAMPTZ '{sql_date(end)}'"
    )


def prior_for_day(
    con: duckdb.DuckDBPyConnection,
    day: str,
    *,
    corpus_days: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    method: Method = "auto",
) -> tuple[pa.Table, PriorSummary]:
    """``neighbour_prior`` of the videos of view `videos` created on `day`, over the labelled
    videos (view `labels`) of the corpus window, with their vectors from view `embeddings`.

    Only corpus vectors of an encoder that embedded `day`'s videos count: vectors of two
    encoders are not comparable (nor, in general, of one width).
    """
    start, end = corpus_window(day, corpus_days)
    label_cols = "".join(f", l.{p.label}" for p in prior_labels())
    today = _created_between(day, (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat())
    window = _created_between(start.date().isoformat(), end.date().isoformat())
    rows = con.sql(
        f"""
        WITH encoders AS (
            SELECT DISTINCT e.encoder FROM videos v JOIN embeddings e USING (video_id)
            WHERE {today}
        )
        SELECT v.video_id, v.created_at, v.duration_s, v.language,
               e.image_emb, e.text_emb, e.has_image, e.has_text,
               ({today}) AS is_query,
               e.encoder IN (SELECT encoder FROM encoders) AS same_encoder{label_cols}
        FROM videos v
        LEFT JOIN embeddings e USING (video_id)
        LEFT JOIN labels l USING (video_id)
        WHERE ({today}) OR ({window} AND l.video_id IS NOT NULL)
        ORDER BY v.created_at, v.video_id
        """
    ).to_arrow_table()
    is_query = rows["is_query"].to_numpy(zero_copy_only=False)
    keep = is_query | rows["same_encoder"].fill_null(False).to_numpy(zero_copy_only=False)
    used = rows.filter(pa.array(keep))
    vectors = raw_vectors(content_from_table(used), list_width(used, "image_emb"))
    everything = Videos(
        np.asarray(used["video_id"].to_pylist(), dtype=object),
        used["created_at"].to_numpy().astype("datetime64[us]"),
        vectors,
        {
            p.label: used[p.label].to_numpy(zero_copy_only=False).astype(np.float64)
            for p in prior_labels()
        },
    )
    query_rows = used["is_query"].to_numpy(zero_copy_only=False)
    query, corpus = everything.subset(query_rows), everything.subset(~query_rows)
    table = neighbour_prior(
        query, corpus, day, corpus_days=corpus_days, k=k, temperature=temperature, method=method
    )
    counts = table["n_neighbours"].to_numpy()
    return table, PriorSummary(
        videos=table.num_rows,
        videos_without_content=int((~query.has_content).sum()),
        corpus_videos=int(corpus.has_content.sum()),
        corpus_skipped=int((~is_query).sum() - corpus.has_content.sum()),
        mean_neighbours=float(counts.mean()) if len(counts) else 0.0,
    )


def point_in_time_violations(prior: pa.Table, day: str) -> int:
    """Rows of `day`'s prior with a neighbour created on D-7 or later: a video whose 7-day
    window was still open when D began."""
    newest = prior["newest_neighbour_created_at"]
    late = pc.greater_equal(newest, pa.scalar(cutoff(day), newest.type))
    return int(pc.sum(pc.fill_null(late, False).cast(pa.int64())).as_py() or 0)
