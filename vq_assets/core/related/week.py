"""The CDML assets' work without Dagster (DESIGN §11): a week's tower from its co-watch, the
towers kept in the lake, every new video's vector, its related list, and the held-out
evaluation.

A week W starting on day S learns from the co-watch pairs of event days S-28..S-1 (all over
before S), split by time: the last `test_days` event days are held out for `cdml_evaluation`,
the `val_days` before them pick the best epoch (recall@k per epoch), the rest train. Videos
enter through their content only, so the tower gives any video a vector at creation.

Vectors of two weekly towers are not comparable, so `related_for_day` re-embeds its whole
corpus (the 28 days up to D) with the tower current at D rather than reading older days'
vectors; the tower is a small MLP, so that costs little next to the search (bench/).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.lake.store import Lake
from vq_assets.core.related.cdml import CDMLConfig, CDMLResult, CDMLTower, embed, train_cdml
from vq_assets.core.related.checkpoint import TOWER_FILE, load_tower, save_tower
from vq_assets.core.related.content import (
    ContentMatrix,
    content_from_table,
    list_width,
    raw_vectors,
)
from vq_assets.core.related.cowatch import pair_index
from vq_assets.core.related.evaluation import compare_methods, random_vectors
from vq_assets.core.related.search import DEFAULT_K, EXACT_MAX_CORPUS, top_k_related

CORPUS_DAYS = 28  # related videos come from the videos created in the 28 days up to D
MIN_TRAIN_PAIRS = 64


def content_rows(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every video of view `videos` with its embeddings from view `embeddings` (null where it
    has none: it then has no content and gets no vector), ordered by creation."""
    return con.sql(
        """
        SELECT v.video_id, v.created_at, CAST(v.created_at AS DATE) AS day,
               v.duration_s, v.language,
               e.image_emb, e.text_emb, e.has_image, e.has_text
        FROM videos v LEFT JOIN embeddings e USING (video_id)
        ORDER BY v.created_at, v.video_id
        """
    ).to_arrow_table()


@dataclass
class Corpus:
    """Content rows with their content matrix; `ids`/`days` cover every row."""

    ids: list[str]
    days: np.ndarray  # [n] datetime64[D]
    content: ContentMatrix
    raw: np.ndarray  # [n, d] raw_vectors: the baseline's vectors

    @classmethod
    def from_table(cls, table: pa.Table) -> Corpus:
        content = content_from_table(table)
        return cls(
            ids=table.column("video_id").to_pylist(),
            days=table.column("day").to_numpy(zero_copy_only=False).astype("datetime64[D]"),
            content=content,
            raw=raw_vectors(content, list_width(table, "image_emb")),
        )

    def rows(self, first: str, last: str) -> np.ndarray:
        """Rows with content created on days first..last (inclusive)."""
        lo, hi = np.datetime64(first, "D"), np.datetime64(last, "D")
        return np.flatnonzero(self.content.mask & (self.days >= lo) & (self.days <= hi))


def _day(day: str, offset: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=offset)).isoformat()


@dataclass(frozen=True)
class WeekSplit:
    """Event days of a week's co-watch pairs by role (ISO dates, inclusive ranges)."""

    train: tuple[str, str]
    val: tuple[str, str]
    test: tuple[str, str]

    @classmethod
    def of(cls, week_start: str, val_days: int, test_days: int, days: int = 28) -> WeekSplit:
        if min(val_days, test_days) < 1 or val_days + test_days >= days:
            raise ValueError("need val_days >= 1, test_days >= 1, val_days + test_days < 28")
        return cls(
            train=(_day(week_start, -days), _day(week_start, -val_days - test_days - 1)),
            val=(_day(week_start, -val_days - test_days), _day(week_start, -test_days - 1)),
            test=(_day(week_start, -test_days), _day(week_start, -1)),
        )

    def pairs(self, pairs: pa.Table, role: str) -> pa.Table:
        first, last = getattr(self, role)
        day = pairs.column("event_day")
        lo, hi = pa.scalar(dt.date.fromisoformat(first)), pa.scalar(dt.date.fromisoformat(last))
        return pairs.filter(pc.and_(pc.greater_equal(day, lo), pc.less_equal(day, hi)))


@dataclass
class WeekFit:
    result: CDMLResult
    split: WeekSplit
    videos: int
    videos_without_content: int
    train_pairs: int
    val_pairs: int
    pairs_without_content: int  # a side has no content row (outside the corpus, or none)
    history: list[dict[str, float]] = field(default_factory=list)


def fit_week(
    corpus: Corpus,
    pairs: pa.Table,
    week_start: str,
    config: CDMLConfig,
    *,
    val_days: int = 3,
    test_days: int = 3,
    checkpoint_dir: Path | str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    device: str = "cpu",
) -> WeekFit:
    """Train week `week_start`'s tower on its train pairs, choosing the epoch on its
    validation pairs (never the test days)."""
    split = WeekSplit.of(week_start, val_days, test_days)
    rows = np.flatnonzero(corpus.content.mask)
    ids = [corpus.ids[i] for i in rows]
    train = pair_index(split.pairs(pairs, "train"), ids)
    val = pair_index(split.pairs(pairs, "val"), ids)
    if len(train.idx_a) < MIN_TRAIN_PAIRS:
        raise ValueError(
            f"week {week_start}: {len(train.idx_a)} co-watch pairs with content on event days "
            f"{split.train[0]}..{split.train[1]}, fewer than {MIN_TRAIN_PAIRS}: materialize "
            "cowatch_pairs, raw_videos and video_embeddings for those days first"
        )
    result = train_cdml(
        corpus.content.features[rows],
        train,
        val if len(val.idx_a) else None,
        config,
        checkpoint_dir=checkpoint_dir,
        on_epoch=on_epoch,
        device=device,
    )
    return WeekFit(
        result=result,
        split=split,
        videos=len(corpus.ids),
        videos_without_content=corpus.content.missing,
        train_pairs=len(train.idx_a),
        val_pairs=len(val.idx_a),
        pairs_without_content=train.unknown + val.unknown,
        history=result.history,
    )


# ------------------------------------------------------------------------------------------
# towers in the lake


def tower_path(lake: Lake, week: str) -> str:
    return lake.path("models", "cdml", f"w={week}", TOWER_FILE)


def save_week_tower(lake: Lake, week: str, tower: CDMLTower) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, TOWER_FILE)
        save_tower(local, tower)
        lake.write_bytes(tower_path(lake, week), local.read_bytes())
    return lake.uri(tower_path(lake, week))


def load_week_tower(lake: Lake, week: str) -> CDMLTower:
    path = tower_path(lake, week)
    if not lake.exists(path):
        raise FileNotFoundError(f"no CDML tower for week {week} at {lake.uri(path)}")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, TOWER_FILE)
        local.write_bytes(lake.read_bytes(lake.uri(path)))
        return load_tower(local)


def tower_week_as_of(lake: Lake, day: str) -> str | None:
    """The newest week whose `cdml_model` exists and started on or before `day`."""
    weeks = [w for w in lake.list_days(lake.asset_dir("cdml_model")) if w <= day]
    return weeks[-1] if weeks else None


def current_tower(lake: Lake, day: str) -> tuple[str, CDMLTower]:
    week = tower_week_as_of(lake, day)
    if week is None:
        raise FileNotFoundError(
            f"no cdml_model of a week starting on or before {day}: materialize cdml_model for "
            "such a week first"
        )
    return week, load_week_tower(lake, week)


# ------------------------------------------------------------------------------------------
# serving


def video_vectors(tower: CDMLTower, corpus: Corpus, week: str) -> pa.Table:
    """(video_id, cdml_emb, model_week) for every video with content."""
    rows = np.flatnonzero(corpus.content.mask)
    vecs = embed(tower, corpus.content.features[rows])
    values = pa.FixedSizeListArray.from_arrays(
        pa.array(vecs.reshape(-1), pa.float32()), tower.config.out_dim
    )
    return pa.table(
        {
            "video_id": pa.array([corpus.ids[i] for i in rows], pa.string()),
            "cdml_emb": values,
            "model_week": pa.array([week] * len(rows), pa.string()),
        }
    )


@dataclass(frozen=True)
class RelatedStats:
    queries: int
    queries_without_content: int
    corpus: int
    method: str


def related_for_day(
    tower: CDMLTower,
    corpus: Corpus,
    day: str,
    *,
    k: int = DEFAULT_K,
    exclude_ids: set[str] = frozenset(),  # type: ignore[assignment]
    exact_max_corpus: int = EXACT_MAX_CORPUS,
) -> tuple[pa.Table, RelatedStats]:
    """Top-k related videos (RELATED_SCHEMA) of each video created on `day` with content,
    among the corpus videos created in the CORPUS_DAYS days up to `day` (guardrails
    `exclude_ids` and the video itself left out)."""
    queries = corpus.rows(day, day)
    candidates = corpus.rows(_day(day, 1 - CORPUS_DAYS), day)
    on_day = int((corpus.days == np.datetime64(day, "D")).sum())
    vecs = embed(tower, corpus.content.features[candidates])
    position = {int(r): i for i, r in enumerate(candidates)}
    q_vecs = vecs[[position[int(r)] for r in queries]]
    ids = np.asarray(corpus.ids, dtype=object)
    eligible = len(candidates) - len(exclude_ids & set(ids[candidates]))
    related = top_k_related(
        list(ids[queries]),
        q_vecs,
        list(ids[candidates]),
        vecs,
        k,
        exclude_ids=exclude_ids,
        exact_max_corpus=exact_max_corpus,
    )
    method = "exact" if eligible <= exact_max_corpus else "ann"
    return related, RelatedStats(len(queries), on_day - len(queries), len(candidates), method)


# ------------------------------------------------------------------------------------------
# evaluation


def evaluate_week(
    tower: CDMLTower,
    corpus: Corpus,
    pairs: pa.Table,
    split: WeekSplit,
    *,
    k: int = 20,
    exclude_ids: set[str] = frozenset(),  # type: ignore[assignment]
    topics: Mapping[str, str | None] | None = None,
    seed: int = 0,
) -> pa.Table:
    """recall@k, nDCG@k (and the same-topic share with `topics`) of the week's tower, cosine on
    the raw content vectors and random vectors, for the videos created on the test days, each
    ranked among the videos created in the 28 days up to its day, against the co-watch of the
    test days (which the tower never saw)."""
    first, last = split.test
    groups = []
    day = first
    while day <= last:
        groups.append((corpus.rows(day, day), corpus.rows(_day(day, 1 - CORPUS_DAYS), day)))
        day = _day(day, 1)
    rows = np.flatnonzero(corpus.content.mask)
    vectors = {
        "cdml": np.zeros((len(corpus.ids), tower.config.out_dim), np.float32),
        "content_cosine": corpus.raw,
        "random": random_vectors(len(corpus.ids), tower.config.out_dim, seed),
    }
    vectors["cdml"][rows] = embed(tower, corpus.content.features[rows])
    return compare_methods(
        corpus.ids,
        vectors,
        groups,
        split.pairs(pairs, "test"),
        k=k,
        exclude_ids=exclude_ids,
        topics=topics,
    )


def mean_top_score(related: pa.Table) -> float:
    """Mean cosine of rank-1 neighbours (NaN without rows): a drift signal for the UI."""
    top = related.filter(pc.equal(related.column("rank"), 1)).column("score")
    return float(pc.mean(top).as_py()) if len(top) else float("nan")


def truth_topics(lake: Lake, days: Sequence[str]) -> dict[str, str | None] | None:
    """video id -> topic from the simulator's hidden truth of `days` (evaluation only, never a
    feature); None when the lake has no truth (real data)."""
    files = [f for d in days for f in lake.list_files(lake.path("truth", "videos", f"dt={d}"))]
    if not files:
        return None
    truth = pa.concat_tables([lake.read_table(f, ["video_id", "topic"]) for f in files])
    return dict(zip(truth["video_id"].to_pylist(), truth["topic"].to_pylist(), strict=True))


def metrics_markdown(table: pa.Table) -> str:
    """The evaluation table as markdown, one method a row."""
    lines = [
        "| method | recall@k | nDCG@k | same-topic share | queries |",
        "|---|---|---|---|---|",
    ]
    for r in table.to_pylist():
        lines.append(
            f"| {r['method']} | {r['recall']:.4f} | {r['ndcg']:.4f} | "
            f"{r['same_topic_share']:.3f} | {r['queries']} |"
        )
    return "\n".join(lines)
