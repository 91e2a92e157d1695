"""Model inputs: one row per video joining creation-time features (and, to train, its labels).

The same join and the same encoding serve training (`training_set`) and scoring
(`quality_scores`), so a feature can never mean one thing at training time and another when a new
video is scored. Every column here is known when the video is created: its own row (its caption
too, as text the network hashes into n-grams), its media embeddings, creator history that the
point-in-time `creator_features` asset already cut at the day's start, and the outcomes of its
nearest earlier videos whose label windows had closed by then (the `retrieval_prior` asset,
`retrieval.py`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.windows import LABEL_COLUMNS
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.popularity import COMPONENTS
from vq_assets.core.model.retrieval import prior_columns, retrieval_matrix

# Index 0 = unknown (null), last = any other ISO-639-1 code: the cardinality never changes.
LANGUAGES = ("en", "es", "pt", "id", "ja", "ko", "ar", "hi", "fr", "de", "ru", "tr", "vi", "th")
DURATION_EDGES_S = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)
# The caption's text group keeps its first characters only: a fixed-width str column costs the
# longest row's width on every row, and the hashing reads fewer (``NgramHashing.max_ids``).
CAPTION_CHARS = 512

CATEGORICAL = {
    "language": len(LANGUAGES) + 2,
    "duration_bucket": len(DURATION_EDGES_S) + 1,
    "hour": 24,
    "weekday": 7,
}

_COUNT_MEANS = ("plays", "skips", "full_watches", "likes", "comments", "shares")
CREATOR_FEATURES = (
    "log_prior_videos",
    "log_days_active",
    "log_prior_labeled",
    "has_history",
    "log_followers",
    "followers_missing",
    *(f"log_prior_mean_{c}" for c in (*_COUNT_MEANS, "avg_watch_time_s")),
    "prior_mean_skip_rate",
    "prior_mean_engagement_rate",
)

# Feature groups per ablation (DESIGN §6); the full model is `FULL_MODEL`. The arm before it is
# the full model without the retrieval-augmented prior: `model_evaluation` measures the prior's
# value as the difference of the two. The last arm adds the learned caption n-grams, which
# production leaves out: on the simulator (bench/captions.py) they read non-English captions
# better than the English sentence encoder but add nothing beside it and the creator's history.
_WITHOUT_RETRIEVAL = ("image_emb", "text_emb", "creator", "length", *CATEGORICAL)
ABLATIONS: dict[str, tuple[str, ...]] = {
    "embeddings_only": ("image_emb", "text_emb"),
    "creator_only": ("creator",),
    "both": ("image_emb", "text_emb", "creator"),
    "both_language_length": _WITHOUT_RETRIEVAL,
    "with_retrieval": (*_WITHOUT_RETRIEVAL, "retrieval"),
    "with_caption_ngrams": (*_WITHOUT_RETRIEVAL, "retrieval", "caption_ngrams"),
}
FULL_MODEL = "with_retrieval"
WITHOUT_RETRIEVAL = "both_language_length"
# The modality study (DESIGN §6): one input at a time against the full model (`all`).
# `cover_emb` is the cover alone; embeddings written before it existed lack it, and the arm is
# then reported as not measured.
MODALITIES: dict[str, tuple[str, ...]] = {
    "text_only": ("text_emb",),
    "image_only": ("image_emb",),
    "cover_only": ("cover_emb",),
    "creator_only": ("creator",),
    "text_image": ("image_emb", "text_emb"),
    "all": ABLATIONS[FULL_MODEL],
}


def joined_rows(
    con: duckdb.DuckDBPyConnection, *, with_labels: bool, with_prior: bool = False
) -> pa.Table:
    """One row per video from views `videos`, `embeddings`, `creator` (and `labels`; and, with
    `with_prior`, the retrieval prior's columns from view `prior`).

    Videos without an embedding row or a creator-feature row are dropped by the inner join; the
    caller reports how many. The prior is left-joined: a video without a prior row keeps its row
    with null prior columns (``retrieval_matrix`` marks it missing). The cover vector comes
    along where the embeddings have one (the modality study reads it; scoring does not).
    """
    with_cover = "cover_emb" in con.sql("SELECT * FROM embeddings LIMIT 0").columns
    return con.sql(_joined_query(with_labels, with_prior, with_cover=with_cover)).to_arrow_table()


def joined_batches(
    con: duckdb.DuckDBPyConnection, *, with_labels: bool, batch_rows: int, with_prior: bool = False
) -> Iterator[pa.Table]:
    """``joined_rows`` as tables of at most ``batch_rows`` rows, each sorted by
    ``(created_at, video_id)`` but in no order between them (the caller sorts the small result).

    A day of a million videos with their embeddings is gigabytes: here the wide `embeddings`
    view streams through hash joins built on the narrow views, so DuckDB holds the narrow side
    only (measured at 1M videos: 1.5 GB peak against 4.3 GB for the sorted join). DuckDB would
    build on the embeddings (equal row counts), so its join-order and build-side optimizers
    are off for this query only.
    """
    query = _joined_query(with_labels, with_prior, embeddings_first=True)
    con.execute("SET disabled_optimizers = 'join_order,build_side_probe_side'")
    reader = None
    try:
        reader = con.sql(query).to_arrow_reader(batch_rows)
        for batch in reader:
            yield pa.Table.from_batches([batch]).sort_by(
                [("created_at", "ascending"), ("video_id", "ascending")]
            )
    finally:
        if reader is not None:
            reader.close()  # the connection takes no statement while a result is open
        con.execute("RESET disabled_optimizers")


def _joined_query(
    with_labels: bool, with_prior: bool, embeddings_first: bool = False, with_cover: bool = False
) -> str:
    creator_cols = ", ".join(
        f"c.{c}"
        for c in (
            "prior_videos",
            "days_active",
            "prior_labeled",
            *(f"prior_mean_{c}" for c in LABEL_COLUMNS),
            "followers",
        )
    )
    label_cols = "".join(f", l.{c}" for c in LABEL_COLUMNS) if with_labels else ""
    prior_cols = "".join(f", r.{c}" for c in prior_columns()) if with_prior else ""
    select = f"""
        SELECT v.video_id, v.creator_id, v.created_at,
               CAST(v.created_at AS DATE) AS day,
               v.duration_s, v.language, v.caption,
               e.image_emb, e.text_emb, e.media_status{", e.cover_emb" if with_cover else ""},
               {creator_cols}{label_cols}{prior_cols}
        """
    labels = " JOIN labels l USING (video_id)" if with_labels else ""
    prior = " LEFT JOIN prior r USING (video_id)" if with_prior else ""
    if embeddings_first:
        return f"""{select}
        FROM embeddings e JOIN videos v USING (video_id) JOIN creator c USING (video_id){labels}
        {prior}
        """
    return f"""{select}
        FROM videos v{labels}
        JOIN embeddings e USING (video_id)
        JOIN creator c USING (video_id){prior}
        ORDER BY v.created_at, v.video_id
        """


def split_days(days: list[str], val_fraction: float = 0.15, test_fraction: float = 0.15) -> dict:
    """Time-ordered split: the last days are test, the ones before validation, the rest train."""
    days = sorted(days)
    if len(days) < 3:
        raise ValueError(f"a time split needs at least 3 label days, got {len(days)}: {days}")
    n_test = max(1, math.floor(len(days) * test_fraction + 0.5))
    n_val = max(1, math.floor(len(days) * val_fraction + 0.5))
    n_train = len(days) - n_test - n_val
    if n_train < 1:
        raise ValueError(f"too few label days ({len(days)}) for train/validation/test")
    return {
        d: "train" if i < n_train else "validation" if i < n_train + n_val else "test"
        for i, d in enumerate(days)
    }


def with_time_split(rows: pa.Table) -> tuple[pa.Table, dict[str, list[str]]]:
    """`rows` (from `joined_rows`) with a `split` column by creation day (`split_days`), and
    the days of each split."""
    days = [d.isoformat() for d in rows.column("day").to_pylist()]
    split_of = split_days(sorted(set(days)))
    table = rows.append_column("split", pa.array([split_of[d] for d in days], pa.string()))
    by_split = {
        s: [d for d, x in sorted(split_of.items()) if x == s]
        for s in ("train", "validation", "test")
    }
    return table, by_split


def _emb(column: pa.ChunkedArray) -> np.ndarray:
    """[n, d] float32 from a list column (fixed-size, or a plain list after a DuckDB join);
    an all-null column (an encoder side that does not exist) gives [n, 0]."""
    arr = column.combine_chunks()
    if arr.null_count == len(arr):
        return np.zeros((len(arr), 0), np.float32)
    widths = pc.list_value_length(arr).drop_null().unique().to_pylist()
    if len(widths) != 1 or arr.null_count:
        raise ValueError(f"embedding column has rows of widths {widths} or null rows")
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(arr), widths[0])


def _col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def language_index(values: list[str | None]) -> np.ndarray:
    lookup = {lang: i + 1 for i, lang in enumerate(LANGUAGES)}
    other = len(LANGUAGES) + 1
    return np.array([0 if v is None else lookup.get(v, other) for v in values], np.int64)


def duration_bucket(duration_s: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(DURATION_EDGES_S), duration_s, side="right").astype(np.int64)


def creator_matrix(table: pa.Table) -> np.ndarray:
    """[n, len(CREATOR_FEATURES)] float32; nulls become 0 with an indicator where it matters."""
    followers = _col(table, "followers")
    cols = {
        "log_prior_videos": np.log1p(_col(table, "prior_videos")),
        "log_days_active": np.log1p(_col(table, "days_active")),
        "log_prior_labeled": np.log1p(_col(table, "prior_labeled")),
        "has_history": (_col(table, "prior_labeled") > 0).astype(np.float64),
        "log_followers": np.log1p(np.nan_to_num(followers, nan=0.0)),
        "followers_missing": np.isnan(followers).astype(np.float64),
        **{
            f"log_prior_mean_{c}": np.log1p(_col(table, f"prior_mean_{c}"))
            for c in (*_COUNT_MEANS, "avg_watch_time_s")
        },
        "prior_mean_skip_rate": _col(table, "prior_mean_skip_rate"),
        "prior_mean_engagement_rate": _col(table, "prior_mean_engagement_rate"),
    }
    return np.nan_to_num(np.stack([cols[c] for c in CREATOR_FEATURES], axis=1)).astype(np.float32)


def caption_texts(captions: list[str | None]) -> np.ndarray:
    """``[n]`` str: each caption's first ``CAPTION_CHARS`` characters, ``""`` for null (the
    network hashes them into n-grams, ``ngrams.py``)."""
    return np.array([(c or "")[:CAPTION_CHARS] for c in captions], dtype=np.str_)


def to_dataset(table: pa.Table) -> QualityDataset:
    """Model inputs (and targets and plays when the table has labels) from `joined_rows`."""
    created = table.column("created_at").to_pylist()
    features = {
        "image_emb": _emb(table.column("image_emb")),
        "text_emb": _emb(table.column("text_emb")),
        "creator": creator_matrix(table),
        # Continuous length beside its bucket: watch time and full watches scale with it.
        "length": np.log1p(_col(table, "duration_s"))[:, None].astype(np.float32),
        "language": language_index(table.column("language").to_pylist()),
        "duration_bucket": duration_bucket(_col(table, "duration_s")),
        "hour": np.array([c.hour for c in created], np.int64),
        "weekday": np.array([c.weekday() for c in created], np.int64),
    }
    if "caption" in table.column_names:
        features["caption_ngrams"] = caption_texts(table.column("caption").to_pylist())
    # Embeddings that keep the cover apart; a window that also spans days embedded before
    # they did (null rows) leaves the group out rather than invent their covers.
    if "cover_emb" in table.column_names and not table.column("cover_emb").null_count:
        features["cover_emb"] = _emb(table.column("cover_emb"))
    if "n_neighbours" in table.column_names:  # joined with the retrieval prior
        features["retrieval"] = retrieval_matrix(table)
    features = {k: v for k, v in features.items() if v.ndim == 1 or v.shape[1] > 0}
    if "plays" not in table.column_names:
        return QualityDataset(features=features)
    # An ordinal task's target is derived per model from the counters (QualityDataset
    # .with_popularity); it is unknown until a scale is chosen.
    targets = {
        t.name: _col(table, t.label) if t.kind != "ordinal" else np.full(table.num_rows, np.nan)
        for t in tasks.catalogue()
    }
    counters = {c: _col(table, c) for c in COMPONENTS}
    return QualityDataset(features, targets, _col(table, "plays"), counters)


def groups_for(
    ablation: str, dataset: QualityDataset, rows: np.ndarray | None = None
) -> tuple[str, ...]:
    """The ablation's (or modality arm's) groups that the data has (a text-only encoder has no
    image group).

    With `rows` (the training rows), a dense or text group constant over them is left out too: the
    network can learn nothing from it, and where it varies later its untrained projection only
    adds noise (the retrieval prior is missing on every row of a world's first 8 days, so a
    first model trained on those days alone must not take it)."""

    def varies(values: np.ndarray) -> bool:
        text = values.dtype.kind == "U"  # a platform without captions has only ""
        if rows is None or (values.ndim == 1 and not text):
            return True
        x = values[rows] if text else np.nan_to_num(values[rows])
        return bool(len(x)) and bool((x != x[0]).any())

    wanted = ABLATIONS[ablation] if ablation in ABLATIONS else MODALITIES[ablation]
    return tuple(g for g in wanted if g in dataset.features and varies(dataset.features[g]))


def label_days_for_week(week_start: str, n_days: int, first_day: str) -> list[str]:
    """The label days complete at the start of `week_start`: D + 7 days over, i.e. D <= S - 8."""
    start = dt.date.fromisoformat(week_start)
    last = start - dt.timedelta(days=8)
    days = [(last - dt.timedelta(days=i)).isoformat() for i in range(n_days)]
    return sorted(d for d in days if d >= first_day)
