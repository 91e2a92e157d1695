"""Real pixels vs random weights: `image_only` and `cover_only` with EfficientNet-Lite0's ImageNet
weights against the same arms with the BLIP placeholder (figures only, never asserted).

On a lake that `make demo` (or `vq run`) has replayed: it takes one week's `training_set` (the
latest unless --week), whose image vectors are the lake's own (`video_embeddings`, by default
EfficientNet-Lite0), re-embeds the same videos' frames and covers with the locally built BLIP
placeholder (random weights: what the demo used before) at the same frame count, and trains
each arm on both through the model's own recipe (`evaluation.variants.train_variant`: same
rows, split, seed and settings as `model_evaluation`). It prints each task's test Spearman for
both encoders and their difference with the 95% paired-bootstrap interval.

    python bench/image_encoders.py                      # the demo lake, its last week
    python bench/image_encoders.py --lake PATH --week 2026-02-01
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.embeddings.media_access import LakeMediaReader  # noqa: E402
from vq_assets.core.embeddings.pipeline import embed_videos  # noqa: E402
from vq_assets.core.embeddings.registry import load_encoder  # noqa: E402
from vq_assets.core.evaluation.rows import spearman_by_task, spearman_gaps  # noqa: E402
from vq_assets.core.evaluation.variants import split_of, train_variant  # noqa: E402
from vq_assets.core.lake.store import Lake  # noqa: E402
from vq_assets.core.model import tasks  # noqa: E402
from vq_assets.core.model.features import MODALITIES, groups_for, to_dataset  # noqa: E402
from vq_assets.core.model.inference import evaluate  # noqa: E402
from vq_assets.core.model.settings import ModelShape, TrainSettings  # noqa: E402

ARMS = ("image_only", "cover_only")
# The image group's columns: what the other encoder replaces (captions keep the lake's vectors).
IMAGE_COLUMNS = ("image_emb", "has_image", "cover_emb", "has_cover")


def _latest(root: Path, asset: str) -> str:
    parts = sorted(p.name.split("=", 1)[1] for p in (root / "assets" / asset).glob("*=*"))
    if not parts:
        raise SystemExit(f"no {asset} partition under {root / 'assets' / asset}: run make demo")
    return parts[-1]


def _training_set(root: Path, week: str) -> pa.Table:
    files = sorted((root / "assets" / "training_set").glob(f"*={week}/*.parquet"))
    if not files:
        raise SystemExit(f"no training_set partition {week} under {root}")
    return pa.concat_tables(pq.read_table(f) for f in files)


def _encoder(root: Path) -> str:
    """The encoder the lake's `video_embeddings` name (its latest partition)."""
    part = _latest(root, "video_embeddings")
    files = sorted((root / "assets" / "video_embeddings").glob(f"*={part}/*.parquet"))
    return str(pq.read_table(files[0], columns=["encoder"]).column("encoder")[0])


def _videos(root: Path, ids: pa.Array) -> pa.Table:
    """The training rows' videos (id, caption, media URIs) from `raw_videos`, in `ids` order."""
    columns = ["video_id", "caption", "video_uri", "thumbnail_uri"]
    files = sorted((root / "assets" / "raw_videos").glob("dt=*/*.parquet"))
    videos = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
    videos = videos.filter(pc.is_in(videos.column("video_id"), value_set=ids))
    order = pc.index_in(ids, value_set=videos.column("video_id"))
    if order.null_count:
        raise SystemExit(f"{order.null_count} training rows have no raw_videos row")
    return videos.take(order)


def _with_images(table: pa.Table, embedded: pa.Table) -> pa.Table:
    for column in IMAGE_COLUMNS:
        i = table.schema.get_field_index(column)
        if i >= 0:  # a lake embedded before the cover had its own vector has no cover_emb
            table = table.set_column(i, column, embedded.column(column))
    return table


def _arm(table: pa.Table, arm: str, shape: ModelShape, settings: TrainSettings):
    data, split = to_dataset(table), split_of(table)
    started = time.monotonic()
    result = train_variant(data, split, arm, shape, settings)
    test = data.with_popularity(result.model.config.popularity).subset(split == "test")
    preds = evaluate(result.model, result.normalizer, test).predictions
    return preds, test, time.monotonic() - started


def week_parser(doc: str) -> argparse.ArgumentParser:
    """The options every bench on a replayed lake's week takes (this one and recipe.py)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--lake", default=".vq/lake", help="a replayed local lake (default .vq/lake)")
    p.add_argument("--week", default=None, help="the training_set partition (default: latest)")
    p.add_argument("--threads", type=int, default=2)
    return p


def load_week(args: argparse.Namespace) -> tuple[Path, str, pa.Table]:
    """Sets torch's threads; the lake root, the week and its training set."""
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.lake).resolve()
    week = args.week or _latest(root, "training_set")
    return root, week, _training_set(root, week)


def main(argv: list[str] | None = None) -> int:
    p = week_parser(__doc__)
    p.add_argument("--frames", type=int, default=4, help="frames per video, as the demo's")
    args = p.parse_args(argv)
    root, week, table = load_week(args)
    print(f"training_set {week}: {table.num_rows} rows ({root}); image vectors: {_encoder(root)}")

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as cache:
        blip = load_encoder("blip", "minilm", cache_dir=os.path.join(cache, "models"))
        videos = _videos(root, table.column("video_id").combine_chunks())
        embedded = embed_videos(
            videos, blip, frames=args.frames, read_bytes=LakeMediaReader(Lake.local(root))
        )
    print(
        f"re-embedded {videos.num_rows} videos with {blip.describe()['image']['name']} "
        f"(placeholder={blip.placeholder}) in {time.monotonic() - started:.0f} s"
    )
    encoders = {"lake": table, "blip_placeholder": _with_images(table, embedded)}

    shape, settings = ModelShape(), TrainSettings()
    names = [t.name for t in tasks.catalogue()]
    for arm in ARMS:
        data, split = to_dataset(table), split_of(table)
        if not groups_for(arm, data, split == "train"):
            print(f"\n{arm}: not measured, no group of {MODALITIES[arm]} varies in this lake")
            continue
        preds, seconds = {}, {}
        for name, t in encoders.items():
            preds[name], test, seconds[name] = _arm(t, arm, shape, settings)
        rho = {n: spearman_by_task(p, test) for n, p in preds.items()}
        gaps = spearman_gaps(preds["lake"], preds["blip_placeholder"], test, settings.seed)
        print(f"\n{arm} (train s: " + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()) + ")")
        print("| task | lake encoder | BLIP placeholder | difference [95% CI] |")
        print("|---|---|---|---|")
        for name in names:
            stem = tasks.task(name).stem
            key, gap = f"{stem}_SpearmanCorr", f"val_{stem}_SpearmanGap"
            if key not in rho["lake"]:
                continue
            print(
                f"| {name} | {rho['lake'][key]:.3f} | {rho['blip_placeholder'][key]:.3f} | "
                f"{gaps[gap]:+.3f} [{gaps[gap + '_ci95_low']:+.3f}, "
                f"{gaps[gap + '_ci95_high']:+.3f}] |"
            )
        means = {n: np.nanmean(list(r.values())) for n, r in rho.items()}
        print(f"| mean | {means['lake']:.3f} | {means['blip_placeholder']:.3f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
