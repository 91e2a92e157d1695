"""Evaluation on real data: KuaiRand-Pure, with authors disjoint between train/validation/test.

The imported lake (`kuairand.import_kuairand`) labels each video over about one month after
upload, not the 7 days of DESIGN §4; it has no caption, cover or frames (so no embeddings) and
only three upload days. What it does know at creation: length, resolution, upload type, video
type, music type, tags, upload day, and the author's uploads on earlier days. The vq network is
trained on those through `train_model` (the `quality_model` asset's recipe) and compared, per
task, on authors never seen in training, with LightGBM on the same features, the creator's prior
mean and the global mean. The Markdown report of the results is `vq_assets.real_report`.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from vq_assets.core.evaluation.baselines import gbdt_baseline
from vq_assets.core.evaluation.metrics import mae, spearman, spearman_gap, task_metrics
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import PART_FILE, SUCCESS_MARKER, Lake, LakeError
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.inference import evaluate
from vq_assets.core.model.popularity import COMPONENTS, PopularityScale
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.train import train_model
from vq_assets.core.sources.kuairand import (
    EXTRAS_TABLE,
    STATS_TABLE,
    VIDEO_EXTRAS_SCHEMA,
    VIDEO_STATS_MONTH_SCHEMA,
)

PREFIX = "test"

# KuaiRand videos run longer than the simulator's (median 81 s, 99th percentile 510 s): with
# features.DURATION_EDGES_S, the 62% of them over 60 s would share three buckets.
DURATION_EDGES_S = (10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0)
# Pixels of the stored width/height; 720 x 1280 and 1280 x 720 are 85% of the videos.
SIDE_EDGES_PX = (600.0, 800.0, 1000.0, 1200.0, 1500.0)

METHODS = ("vq_model", "lightgbm", "creator_prior_mean", "global_mean")


def creator_prior(rows: pa.Table) -> pa.Table:
    """Per video: `prior_videos` (its author's videos uploaded on EARLIER days) and
    `prior_mean_<task>` (their mean label; null when there is none).

    `created_at` holds only the upload date (midnight UTC), so a same-day sibling may have been
    uploaded later that day: only strictly earlier days count, whatever the timestamps say.
    Needs columns video_id, creator_id, created_at and one per task, named after it.
    """
    names = prior_columns()
    means = ", ".join(f"avg(h.{t}) AS prior_mean_{t}" for t in names)
    with connect() as con:
        con.register("rows_in", rows.select(["video_id", "creator_id", "created_at", *names]))
        return con.sql(
            f"""
            SELECT v.video_id, count(h.video_id) AS prior_videos, {means}
            FROM rows_in v LEFT JOIN rows_in h
              ON h.creator_id = v.creator_id
             AND CAST(h.created_at AS DATE) < CAST(v.created_at AS DATE)
            GROUP BY v.video_id
            """
        ).to_arrow_table()


def _label_tasks() -> list[tasks.Task]:
    """Tasks with a label column of their own (an ordinal task's label is derived)."""
    return [t for t in tasks.catalogue() if t.kind != "ordinal"]


def prior_columns() -> list[str]:
    """Columns with a creator prior mean: every label task, and the popularity counters."""
    return list(dict.fromkeys([*(t.name for t in _label_tasks()), *COMPONENTS]))


def lake_imported(lake: Lake) -> bool:
    return lake.exists(lake.path("landing", STATS_TABLE, SUCCESS_MARKER)) and bool(
        _video_days(lake)
    )


def _video_days(lake: Lake) -> list[str]:
    days = lake.list_days(lake.path("landing", "videos"))
    return [
        d for d in days if lake.day_complete("videos", d) and lake.day_complete(EXTRAS_TABLE, d)
    ]


def load_rows(lake: Lake) -> pa.Table:
    """One row per labelled video: `videos` + `video_extras` + `video_stats_month` (each task's
    label as a column named after the task) + the creator prior, in upload order."""
    days = _video_days(lake)
    if not lake_imported(lake):
        raise LakeError(f"no imported KuaiRand landing zone under {lake.root}")
    with connect() as con:
        for view, table, schema in (
            ("videos", "videos", VIDEOS_SCHEMA),
            ("extras", EXTRAS_TABLE, VIDEO_EXTRAS_SCHEMA),
        ):
            files = [f"{lake.landing_dir(table, d)}/{PART_FILE}" for d in days]
            lake.register(con, view, files, schema)
        stats = lake.path("landing", STATS_TABLE, PART_FILE)
        lake.register(con, "stats", [stats], VIDEO_STATS_MONTH_SCHEMA)
        base = con.sql(
            f"""
            SELECT v.video_id, v.creator_id, v.created_at, v.duration_s,
                   x.video_type, x.upload_type, x.tag, x.music_type, x.width, x.height,
                   s.likes, s.comments, s.shares,
                   {", ".join(f"s.{t.label} AS {t.name}" for t in _label_tasks())}
            FROM videos v JOIN extras x USING (video_id) JOIN stats s USING (video_id)
            """
        ).to_arrow_table()
        con.register("base", base)
        con.register("prior", creator_prior(base))
        return con.sql(
            "SELECT * FROM base JOIN prior USING (video_id) ORDER BY created_at, video_id"
        ).to_arrow_table()


def author_split(
    creator_ids: Sequence[str], seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> np.ndarray:
    """'train' / 'validation' / 'test' per row from a seeded hash of the author id alone: every
    video of an author lands in one split, whatever the row order."""

    def unit(creator: str) -> float:
        digest = hashlib.blake2b(f"{seed}:{creator}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def which(u: float) -> str:
        if u < test_fraction:
            return "test"
        return "validation" if u < test_fraction + val_fraction else "train"

    split_of = {c: which(unit(c)) for c in set(creator_ids)}
    return np.array([split_of[c] for c in creator_ids])


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _index(values: list, train: np.ndarray) -> tuple[np.ndarray, int]:
    """Category indices with a vocabulary from training rows only: 0 = null or unseen."""
    vocab = sorted({v for v, t in zip(values, train, strict=True) if t and v is not None})
    lookup = {v: i + 1 for i, v in enumerate(vocab)}
    return np.array([lookup.get(v, 0) for v in values], np.int64), len(vocab) + 1


def _bucket(x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """1 + bucket of x, 0 where x is missing; cardinality len(edges) + 2."""
    b = np.searchsorted(np.asarray(edges), np.nan_to_num(x, nan=0.0), side="right") + 1
    return np.where(np.isfinite(x), b, 0).astype(np.int64)


def build_features(
    rows: pa.Table, train: np.ndarray, top_tags: int
) -> tuple[QualityDataset, dict[str, int]]:
    """Creation-time feature groups and labels of `rows`, plus the categorical cardinalities.
    Vocabularies (tags, types) come from the training rows only."""
    duration = _floats(rows, "duration_s")
    width, height = _floats(rows, "width"), _floats(rows, "height")
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where((width > 0) & (height > 0), np.log(height / width), np.nan)
    tags = [t.split(",") if t else [] for t in rows.column("tag").to_pylist()]
    counts = Counter(t for ts, keep in zip(tags, train, strict=True) if keep for t in ts)
    # Most frequent first; ties by tag id so the vocabulary does not depend on row order.
    vocab = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:top_tags]
    column = {t: i for i, t in enumerate(vocab)}
    multi_hot = np.zeros((len(tags), len(vocab) + 2), np.float32)
    for i, ts in enumerate(tags):
        for t in ts:
            if t in column:
                multi_hot[i, column[t]] = 1.0
            else:
                multi_hot[i, -2] += 1.0  # tags outside the vocabulary
        multi_hot[i, -1] = float(not ts)  # no tag at all
    prior_videos = _floats(rows, "prior_videos")
    created = rows.column("created_at").to_pylist()

    first_tag, first_tag_card = _index([ts[0] if ts else None for ts in tags], train)
    upload_type, upload_type_card = _index(rows.column("upload_type").to_pylist(), train)
    video_type, video_type_card = _index(rows.column("video_type").to_pylist(), train)
    music_type, music_type_card = _index(rows.column("music_type").to_pylist(), train)
    features: dict[str, np.ndarray] = {
        "format": np.stack(
            [np.log1p(duration), np.log1p(width), np.log1p(height), aspect], axis=1
        ).astype(np.float32),
        "tags": multi_hot,
        # Label-free creator history: how many videos the author uploaded on earlier days. The
        # earlier videos' labels are not used here (their month windows are still open).
        "creator": np.stack(
            [np.log1p(prior_videos), (prior_videos > 0).astype(np.float64)], axis=1
        ).astype(np.float32),
        "duration_bucket": _bucket(duration, DURATION_EDGES_S),
        "width_bucket": _bucket(width, SIDE_EDGES_PX),
        "height_bucket": _bucket(height, SIDE_EDGES_PX),
        "upload_type": upload_type,
        "video_type": video_type,
        "music_type": music_type,
        "first_tag": first_tag,
        "weekday": np.array([c.weekday() for c in created], np.int64),
    }
    cards = {
        "duration_bucket": len(DURATION_EDGES_S) + 2,
        "width_bucket": len(SIDE_EDGES_PX) + 2,
        "height_bucket": len(SIDE_EDGES_PX) + 2,
        "upload_type": upload_type_card,
        "video_type": video_type_card,
        "music_type": music_type_card,
        "first_tag": first_tag_card,
        "weekday": 7,
    }
    data = QualityDataset(
        features=features,
        targets={t.name: _floats(rows, t.name) for t in _label_tasks()},
        plays=_floats(rows, "plays"),
        counters={c: _floats(rows, c) for c in COMPONENTS},
    )
    return data, cards


def _metrics(
    preds: dict[str, np.ndarray],
    test: QualityDataset,
    losses: dict[str, float],
    popularity: PopularityScale | None,
) -> dict[str, float]:
    out = task_metrics(preds, test.targets, test.plays, losses, PREFIX, popularity)
    # task_metrics has no MAE for a rate; the issue asks for MAE on every task.
    for task in tasks.catalogue():
        if task.name in preds and task.behaviour.per_play:
            out[f"{PREFIX}_{task.stem}_MAE"] = mae(preds[task.name], test.targets[task.name])
    return out


@dataclass
class RealEvalReport:
    """Test-author metrics per method (`task_metrics` names with prefix `test`, plus the rate
    tasks' MAE) and the facts needed to read them."""

    seed: int
    videos: int  # evaluated: labelled and with a duration
    without_duration: int  # left out, as the videos contract quarantines them
    authors: int
    authors_several_videos: int
    authors_several_days: int
    upload_days: tuple[str, ...]
    split_videos: dict[str, int]
    split_authors: dict[str, int]
    test_with_prior: int  # test videos whose author uploaded on an earlier day
    feature_groups: dict[str, int]  # group -> width (dense) or cardinality (categorical)
    metrics: dict[str, dict[str, float]]  # method -> metrics on all test videos
    metrics_with_prior: dict[str, dict[str, float]]  # the same on test videos with a prior
    duration_spearman_avg_watch: float  # raw length vs avg watch time on the test videos
    test_median_plays: float
    best_epoch: int
    epochs_run: int
    seconds: float
    tasks_left_out: dict[str, str]  # no labels in this source (e.g. virality: no day 0)
    # task -> baseline -> (vq model - baseline test Spearman, 95% paired-bootstrap low, high)
    gaps: dict[str, dict[str, tuple[float, float, float]]]

    def value(self, method: str, task: str, metric: str, *, with_prior: bool = False) -> float:
        """A test metric; NaN when the method has none (MAE of classes, a task left out)."""
        table = self.metrics_with_prior if with_prior else self.metrics
        return table[method].get(f"{PREFIX}_{tasks.task(task).stem}_{metric}", float("nan"))

    def tasks(self) -> list[str]:
        """The catalogue tasks evaluated (those with labels in this source)."""
        return [t for t in tasks.names() if t not in self.tasks_left_out]


def evaluate_real(
    lake: Lake,
    *,
    seed: int = 0,
    max_epochs: int = TrainSettings.max_epochs,
    patience: int = TrainSettings.patience,
    top_tags: int = 40,
    gbdt_rounds: int = 400,
    threads: int = 1,
) -> RealEvalReport:
    """Train and compare every method on the KuaiRand lake, authors split by `seed`.

    The vq model trains through `train_model` with the asset's `ModelShape` and `TrainSettings`
    (the epoch budget is overridable, for quick tests).
    `threads` bounds torch's intra-op threads while training (restored afterwards): other jobs
    share the machine and this data is small.
    """
    start = time.perf_counter()
    all_rows = load_rows(lake)
    has_duration = pc.fill_null(pc.greater(all_rows.column("duration_s"), 0), False)
    rows = all_rows.filter(has_duration)
    creators = rows.column("creator_id").to_pylist()
    split = author_split(creators, seed)
    train, test_mask = split == "train", split == "test"
    data, cards = build_features(rows, train, top_tags)
    groups = tuple(data.features)

    settings = TrainSettings(max_epochs=max_epochs, patience=patience, seed=seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = train_model(data, split, groups, ModelShape(), settings)
        # Popularity classes are cut where the model's training authors put them.
        scale = result.model.config.popularity
        data = data.with_popularity(scale)
        test = data.subset(test_mask)
        ev = evaluate(result.model, result.normalizer, test)
    finally:
        torch.set_num_threads(old_threads)

    names = result.model.config.tasks
    train_mean = {t: float(np.nanmean(data.targets[t][train])) for t in names}
    prior = {t: _floats(rows, f"prior_mean_{t}")[test_mask] for t in names if t in prior_columns()}
    if scale is not None and (ordinal := tasks.ordinal()) is not None:
        counters = {c: _floats(rows, f"prior_mean_{c}")[test_mask] for c in COMPONENTS}
        prior[ordinal.name] = scale.score(counters)
    n_test = int(test_mask.sum())
    predictions = {
        "vq_model": ev.predictions,
        "lightgbm": {
            t: p[test_mask]
            for t, p in gbdt_baseline(
                data, split, seed=seed, rounds=gbdt_rounds, groups=groups
            ).items()
            if t in names
        },
        "creator_prior_mean": {
            t: np.where(np.isnan(prior[t]), train_mean[t], prior[t]) for t in names
        },
        "global_mean": {t: np.full(n_test, train_mean[t]) for t in names},
    }
    # Only the vq model has a loss of its own; task_metrics still wants one per task.
    no_losses = dict.fromkeys(names, float("nan"))
    losses = {m: ev.losses if m == "vq_model" else no_losses for m in METHODS}
    with_prior = _floats(rows, "prior_videos")[test_mask] > 0
    test_prior = test.subset(with_prior)
    per_author = Counter(creators)
    days = Counter(
        (c, d.date()) for c, d in zip(creators, rows.column("created_at").to_pylist(), strict=True)
    )
    authors_days = Counter(c for c, _ in days)
    return RealEvalReport(
        seed=seed,
        videos=rows.num_rows,
        without_duration=all_rows.num_rows - rows.num_rows,
        authors=len(per_author),
        authors_several_videos=sum(n > 1 for n in per_author.values()),
        authors_several_days=sum(n > 1 for n in authors_days.values()),
        upload_days=tuple(sorted({d.isoformat() for _, d in days})),
        split_videos={s: int((split == s).sum()) for s in ("train", "validation", "test")},
        split_authors={
            s: len({c for c, x in zip(creators, split, strict=True) if x == s})
            for s in ("train", "validation", "test")
        },
        test_with_prior=int(with_prior.sum()),
        feature_groups={**result.model.config.dense_dims, **cards},
        metrics={m: _metrics(predictions[m], test, losses[m], scale) for m in METHODS},
        metrics_with_prior={
            m: _metrics(
                {t: p[with_prior] for t, p in predictions[m].items()}, test_prior, no_losses, scale
            )
            for m in METHODS
        },
        duration_spearman_avg_watch=spearman(
            _floats(rows, "duration_s")[test_mask], test.targets["avg_watch_time_s"]
        ),
        test_median_plays=float(np.median(test.plays)),
        best_epoch=result.best_epoch,
        epochs_run=int(max(h["epoch"] for h in result.history)),
        seconds=time.perf_counter() - start,
        tasks_left_out=result.left_out,
        gaps={
            t: {
                m: spearman_gap(
                    predictions["vq_model"][t], predictions[m][t], test.targets[t], seed=seed
                )
                for m in ("lightgbm", "creator_prior_mean")
                if t in predictions[m]
            }
            for t in names
        },
    )
