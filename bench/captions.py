"""Does the learned n-gram caption path read captions the English encoder cannot? (figures only,
never asserted)

Simulates a small world (no media; captions in each video's own language and script), builds
its labels, point-in-time creator features and MiniLM caption embeddings through the project's
own core functions (the chain the Dagster assets run, without Dagster), joins them with
`features.joined_rows`, splits by time and trains the quality model (`train.train_model`) once
per caption variant, with the same creator and categorical groups in each (and twice with a
caption group alone):

  no_caption      creator + length + language, duration bucket, hour, weekday: the floor;
  sentence_emb    + the frozen English sentence encoder's caption embedding (`text_emb`);
  caption_ngrams  + the learned hashed n-gram caption representation (`caption_ngrams`);
  both            + both caption groups;
  sentence_alone  the sentence embedding and nothing else: what it reads of a caption;
  ngrams_alone    the n-gram caption representation and nothing else.

It prints each task's Spearman on the test days' videos, split by the caption's language
(the true one, from the simulator's truth: English vs every other), and the mean over tasks:
against the realised labels, then against the simulator's expected labels (what creation time
allows one to know: the luck of distribution and of a few dozen plays left out), where a
caption's worth is less buried in label noise. The issue's goal: caption_ngrams above
sentence_emb on the non-English captions.

    python bench/captions.py          # 26 days x 250 videos, 10-35 min on 2 shared cores
    python bench/captions.py --days 40 --videos-per-day 500 --members 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.embeddings.minilm import TextOnlyEncoder  # noqa: E402
from vq_assets.core.embeddings.pipeline import embed_videos  # noqa: E402
from vq_assets.core.evaluation.metrics import spearman  # noqa: E402
from vq_assets.core.labels.windows import (  # noqa: E402
    WINDOW_DAYS,
    creator_features,
    labels_from_partials,
    watch_daily_partials,
)
from vq_assets.core.lake.sql import connect  # noqa: E402
from vq_assets.core.model import tasks  # noqa: E402
from vq_assets.core.model.features import (  # noqa: E402
    CATEGORICAL,
    joined_rows,
    to_dataset,
    with_time_split,
)
from vq_assets.core.model.inference import predict  # noqa: E402
from vq_assets.core.model.settings import ModelShape, TrainSettings  # noqa: E402
from vq_assets.core.model.train import train_model  # noqa: E402
from vq_assets.core.sources.simulator import expected_labels, simulate_local  # noqa: E402

START = dt.date(2026, 1, 1)
BASE = ("creator", "length", *CATEGORICAL)
VARIANTS = {
    "no_caption": BASE,
    "sentence_emb": ("text_emb", *BASE),
    "caption_ngrams": ("caption_ngrams", *BASE),
    "both": ("text_emb", "caption_ngrams", *BASE),
    "sentence_alone": ("text_emb",),
    "ngrams_alone": ("caption_ngrams",),
}


def _read(root: Path, table: str) -> pa.Table:
    files = sorted((root / table).glob("dt=*/part-0.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def training_rows(root: Path, days: int, progress) -> tuple[pa.Table, pa.Table]:
    """`joined_rows` of every creation day whose 7-day window the world covers, with its time
    split, and the simulator's truth rows."""
    videos = _read(root / "landing", "videos")
    events = _read(root / "landing", "watch_events")
    truth = _read(root / "truth", "videos")
    label_days = [(START + dt.timedelta(days=d)).isoformat() for d in range(days - WINDOW_DAYS)]
    event_days = [(START + dt.timedelta(days=d)).isoformat() for d in range(days)]
    con = connect()
    con.register("all_videos", videos)
    con.register("all_events", events)

    def by_day(view: str, source: str, column: str, day: str) -> None:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {source} "
            f"WHERE CAST({column} AS DATE) = DATE '{day}'"
        )

    con.execute("CREATE OR REPLACE TEMP VIEW videos AS SELECT * FROM all_videos")
    partials = []
    for day in event_days:
        by_day("events", "all_events", "event_ts", day)
        partials.append(watch_daily_partials(con, day))
    con.register("partials", pa.concat_tables(partials))
    labels = []
    for day in label_days:
        by_day("videos", "all_videos", "created_at", day)
        labels.append(labels_from_partials(con, day))
    con.register("labels", pa.concat_tables(labels))
    con.execute("CREATE OR REPLACE TEMP VIEW history_videos AS SELECT * FROM all_videos")
    con.execute("CREATE OR REPLACE TEMP VIEW history_labels AS SELECT * FROM labels")
    creator = []
    for day in label_days:
        by_day("videos", "all_videos", "created_at", day)
        creator.append(creator_features(con, day))
    con.register("creator", pa.concat_tables(creator))
    progress(f"labels and creator features of {len(label_days)} days")

    started = time.perf_counter()
    # Only the labelled videos are joined: the others need no embedding.
    labelled = con.sql("SELECT v.* FROM all_videos v SEMI JOIN labels USING (video_id)")
    embeddings = embed_videos(
        labelled.to_arrow_table(),
        TextOnlyEncoder(device="cpu"),
        workers=0,
        progress=lambda p: progress(f"MiniLM: {p['done']:,} / {p['total']:,} captions"),
        progress_every=1024,
    )
    progress(f"MiniLM caption embeddings: {time.perf_counter() - started:.0f} s")
    # Through parquet, as the asset's IO manager stores it (DuckDB cannot scan the in-memory
    # all-null fixed_size_list[0] image column of a text-only encoder).
    pq.write_table(embeddings, root / "embeddings.parquet")
    con.read_parquet(str(root / "embeddings.parquet")).create_view("embeddings")
    con.execute("CREATE OR REPLACE TEMP VIEW videos AS SELECT * FROM all_videos")
    table, _ = with_time_split(joined_rows(con, with_labels=True))
    return table, truth


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=26)
    p.add_argument("--videos-per-day", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=2, help="ensemble members per variant")
    args = p.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        summary = simulate_local(
            tmp, START, args.days, args.videos_per_day, seed=args.seed, media=False
        )
        say(f"simulated {summary.videos:,} videos, {summary.events:,} events")
        table, truth = training_rows(Path(tmp), args.days, say)

    data = to_dataset(table)
    split = np.asarray(table.column("split").to_pylist())
    test = data.subset(split == "test")
    index = {v: i for i, v in enumerate(truth.column("video_id").to_pylist())}
    rows = [index[v] for v in np.asarray(table.column("video_id").to_pylist())[split == "test"]]
    english = np.asarray(truth.column("language").to_pylist())[rows] == "en"
    expected = {k: v[rows] for k, v in expected_labels(truth).items()}
    slices = {"en": english, "non-en": ~english}
    say(
        f"{len(data):,} labelled videos; test {len(test):,} "
        f"({int(english.sum())} English captions, {int((~english).sum())} other)"
    )

    shape = ModelShape(members=args.members)
    settings = TrainSettings(seed=args.seed)
    results: dict[str, dict[str, np.ndarray]] = {}
    for name, groups in VARIANTS.items():
        started = time.perf_counter()
        result = train_model(data, split, groups, shape, settings)
        results[name] = predict(result.model, result.normalizer, test)
        took = time.perf_counter() - started
        say(f"trained {name}: {took:.0f} s, best epoch {result.best_epoch} (latest over members)")

    catalogue = [t for t in tasks.catalogue() if t.kind != "ordinal" and t.name in results["both"]]
    truths = {
        "realised labels": {t.name: test.targets[t.name] for t in catalogue},
        "expected labels": {t.name: expected[t.label] for t in catalogue},
    }
    for what, target in truths.items():
        for s, mask in slices.items():
            print(f"\ntest Spearman with the {what}, {s} captions ({int(mask.sum())} videos)")
            print(f"{'task':<18}" + "".join(f"{v:>16}" for v in VARIANTS))
            rho = {
                v: [spearman(results[v][t][mask], y[mask]) for t, y in target.items()]
                for v in VARIANTS
            }
            for k, task in enumerate(target):
                print(f"{task:<18}" + "".join(f"{rho[v][k]:>16.3f}" for v in VARIANTS))
            print(f"{'mean':<18}" + "".join(f"{np.nanmean(rho[v]):>16.3f}" for v in VARIANTS))


if __name__ == "__main__":
    main()
