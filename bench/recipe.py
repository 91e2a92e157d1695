"""The training recipe's choices, measured on a replayed lake (figures only, never asserted).

Trains the production model (`FULL_MODEL` groups, `train.train_model`) on one week's
`training_set` once per recipe variant and prints each task's test Spearman, the largest
training loss any ensemble member saw in an epoch (a spike is an unstable recipe), the wall time,
and each variant's difference to the default with its 95% paired-bootstrap interval:

  default         the settings' defaults: no whitening, each loss scaled (``Kind.loss_scale``);
  whiten_image    + PCA whitening of ``image_emb`` (the default before EfficientNet-Lite0);
  no_log1p_scale  log1p losses unscaled (only the rate keeps 1 / its pooled rate).

    python bench/recipe.py                                  # the demo lake, its last week
    python bench/recipe.py --lake PATH --week 2026-01-25 --variants default,whiten_image
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.image_encoders import load_week, week_parser  # noqa: E402
from vq_assets.core.evaluation.rows import spearman_by_task, spearman_gaps  # noqa: E402
from vq_assets.core.evaluation.variants import split_of  # noqa: E402
from vq_assets.core.model import tasks  # noqa: E402
from vq_assets.core.model import train as train_module  # noqa: E402
from vq_assets.core.model.features import FULL_MODEL, groups_for, to_dataset  # noqa: E402
from vq_assets.core.model.inference import evaluate  # noqa: E402
from vq_assets.core.model.settings import ModelShape, TrainSettings  # noqa: E402

VARIANTS = ("default", "whiten_image", "no_log1p_scale")


def _only_rates(scales):
    def scaled(data, rows, names):
        return {n: v for n, v in scales(data, rows, names).items() if tasks.task(n).kind != "log1p"}

    return scaled


def main(argv: list[str] | None = None) -> int:
    p = week_parser(__doc__)
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args(argv)
    root, week, table = load_week(args)
    data, split = to_dataset(table), split_of(table)
    groups = groups_for(FULL_MODEL, data, split == "train")
    print(f"training_set {week}: {table.num_rows} rows ({root}); groups {groups}")

    scales = train_module.loss_scales
    preds, results = {}, {}
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}: one of {VARIANTS}")
        settings = TrainSettings(whiten=("image_emb",) if variant == "whiten_image" else ())
        train_module.loss_scales = _only_rates(scales) if variant == "no_log1p_scale" else scales
        losses: list[dict[str, float]] = []
        started = time.monotonic()
        result = train_module.train_model(
            data, split, groups, ModelShape(), settings, on_epoch=losses.append
        )
        seconds = time.monotonic() - started
        test = data.with_popularity(result.model.config.popularity).subset(split == "test")
        preds[variant] = evaluate(result.model, result.normalizer, test).predictions
        worst = max(r["train_loss"] for r in losses)
        results[variant] = (spearman_by_task(preds[variant], test), worst, seconds)
    train_module.loss_scales = scales

    names = [t for t in tasks.catalogue() if f"{t.stem}_SpearmanCorr" in results["default"][0]]
    print("\n| variant | " + " | ".join(t.name for t in names) + " | max train loss | s |")
    print("|---|" + "---|" * (len(names) + 2))
    for variant, (rho, worst, seconds) in results.items():
        cells = [f"{rho[f'{t.stem}_SpearmanCorr']:.3f}" for t in names]
        print(f"| {variant} | " + " | ".join(cells) + f" | {worst:.3g} | {seconds:.0f} |")
    for variant in (v for v in results if v != "default"):
        gaps = spearman_gaps(preds[variant], preds["default"], test, TrainSettings().seed)
        cells = []
        for t in names:
            g = f"val_{t.stem}_SpearmanGap"
            low, high = gaps[g + "_ci95_low"], gaps[g + "_ci95_high"]
            cells.append(f"{gaps[g]:+.3f} [{low:+.3f}, {high:+.3f}]")
        print(f"| {variant} − default | " + " | ".join(cells) + " | | |")
    means = {v: np.nanmean(list(r[0].values())) for v, r in results.items()}
    print("\nmean test Spearman: " + ", ".join(f"{v} {m:.3f}" for v, m in means.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
