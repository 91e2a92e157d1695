"""The quality model's training recipe, once: ``train_model`` (an ensemble of seeded networks,
then head recalibration on the validation rows). The ``quality_model`` asset, the evaluation's
variants and this module's ``main(argv)`` entry point all train through it.

Run it directly (facebookresearch/dlrm style)::

    python -m vq_assets.core.model.train --synthetic 20000 --out /tmp/model --max-epochs 5
    torchrun --standalone --nproc_per_node=2 -m vq_assets.core.model.train --data set.npz --out DIR

``TrainSettings.batch_size`` is the *global* batch size: under ``torchrun`` every global batch is
split across ranks, so N processes take exactly the optimisation steps one process would.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch.distributed as dist

from vq_assets.core.model import tasks as tasks_
from vq_assets.core.model.dataset import QualityDataset, infer_groups
from vq_assets.core.model.distributed import Dist, dist_context, resolve_device
from vq_assets.core.model.features import CATEGORICAL
from vq_assets.core.model.inference import evaluate, recalibrate_heads, save_model
from vq_assets.core.model.loop import EpochMetrics, FitResult, fit
from vq_assets.core.model.network import NetworkConfig, QualityEnsemble
from vq_assets.core.model.ngrams import NgramHashing
from vq_assets.core.model.popularity import PopularityScale
from vq_assets.core.model.settings import (
    ModelShape,
    TrainSettings,
    add_arguments,
    from_arguments,
)
from vq_assets.core.model.synthetic import make_synthetic

logger = logging.getLogger(__name__)

OnEpoch = Callable[[dict[str, float]], None]


def network_config(
    dataset: QualityDataset,
    groups: Sequence[str],
    shape: ModelShape,
    tasks: Sequence[str] | None = None,
    popularity: PopularityScale | None = None,
    loss_scale: dict[str, float] | None = None,
) -> NetworkConfig:
    """The network for ``groups`` of ``dataset``: 2-D float groups are dense, 1-D integer ones
    categorical, with the feature encoding's fixed cardinality where it has one (so that the
    same groups always give the same network), else ``max + 1``; str groups are texts, hashed
    into n-grams with the default ``NgramHashing``. ``tasks``: default all."""
    dense, cats, texts = infer_groups(QualityDataset({g: dataset.features[g] for g in groups}))
    cats = {g: max(c, CATEGORICAL.get(g, 0)) for g, c in cats.items()}
    return NetworkConfig(
        dense_dims=dense,
        cat_cardinalities=cats,
        text_hashing={g: NgramHashing() for g in texts},
        shape=shape,
        tasks=tuple(tasks or tasks_.names()),
        popularity=popularity,
        loss_scale=dict(loss_scale or {}),
    )


def loss_scales(data: QualityDataset, rows: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Each task's loss factor from its labels on ``rows`` (``Kind.loss_scale``); tasks whose
    kind leaves the loss as it is are not listed (see ``NetworkConfig.loss_scale``)."""
    plays = np.asarray(data.plays, dtype=np.float64)[rows]
    out = {}
    for name in names:
        kind = tasks_.task(name).behaviour
        y = np.asarray(data.targets[name], dtype=np.float64)[rows]
        ok = np.isfinite(y)
        scale = kind.loss_scale(y[ok], plays[ok])
        if scale != 1.0:
            out[name] = scale
    return out


def tasks_with_labels(data: QualityDataset, split: np.ndarray) -> tuple[list[str], dict[str, str]]:
    """The catalogue tasks with labels on both the train and the validation rows, and the
    others with the reason they are left out (a label the source does not keep is null)."""
    kept, left_out = [], {}
    for task in tasks_.catalogue():
        y = data.targets.get(task.name)
        empty = [
            s for s in ("train", "validation") if y is None or not np.isfinite(y[split == s]).any()
        ]
        if empty:
            what = "its counters" if task.kind == "ordinal" else f"label {task.label!r}"
            left_out[task.name] = f"{what} is null on every {' and '.join(empty)} row"
        else:
            kept.append(task.name)
    if not kept:
        raise ValueError(f"no task has labels on the training days: {left_out}")
    return kept, left_out


def fit_ensemble(
    model_config: NetworkConfig,
    train_cfg: TrainSettings,
    train: QualityDataset,
    val: QualityDataset,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    epoch_metrics: EpochMetrics | None = None,
) -> FitResult:
    """``fit`` once per member with seeds seed, seed+1, ..., averaged into one model.

    Every member sees the same data and the same normaliser (fitted on the train rows); only
    the initialisation, the shuffling and dropout differ. ``on_epoch`` records carry
    ``member``; checkpoints go to ``checkpoint_dir/member<k>``.
    """
    if model_config.shape.members == 1:
        return fit(
            model_config, train_cfg, train, val, on_epoch=on_epoch, epoch_metrics=epoch_metrics
        )
    single = model_config.single()
    results = []
    for k in range(model_config.shape.members):
        ckpt = train_cfg.checkpoint_dir
        cfg = replace(
            train_cfg,
            seed=train_cfg.seed + k,
            checkpoint_dir=None if ckpt is None else str(Path(ckpt) / f"member{k}"),
        )
        member_log = None if on_epoch is None else (lambda r, k=k: on_epoch({**r, "member": k}))
        results.append(
            fit(single, cfg, train, val, on_epoch=member_log, epoch_metrics=epoch_metrics)
        )
    ensemble = QualityEnsemble(model_config)
    for member, result in zip(ensemble.members, results, strict=True):
        member.load_state_dict(result.model.state_dict())
    ensemble.to(next(results[0].model.parameters()).device).eval()
    ev = evaluate(ensemble, results[0].normalizer, val)
    return FitResult(
        model=ensemble,
        normalizer=results[0].normalizer,
        history=[{**h, "member": k} for k, r in enumerate(results) for h in r.history],
        best_epoch=max(r.best_epoch for r in results),
        best_val_loss=float(sum(ev.losses.values())),
        best_val_task_losses=ev.losses,
        stopped_early=all(r.stopped_early for r in results),
    )


def train_model(
    data: QualityDataset,
    split: np.ndarray,
    groups: Sequence[str],
    shape: ModelShape,
    settings: TrainSettings,
    on_epoch: OnEpoch | None = None,
    epoch_metrics: EpochMetrics | None = None,
) -> FitResult:
    """The recipe: ``fit_ensemble`` on the rows whose ``split`` is ``train``, early-stopped and
    recalibrated on the ``validation`` rows; other rows (test days) are never read.
    ``epoch_metrics`` adds metrics on the validation rows to every epoch's record.

    The popularity scale is fitted on the train rows, its residual spread measured on the
    validation rows; tasks without labels are left out (``FitResult.left_out``)."""
    scale = (
        PopularityScale.fit(data.counters, split == "train", settings.popularity_weights)
        if data.counters
        else None
    )
    subset = QualityDataset(
        {g: data.features[g] for g in groups}, data.targets, data.plays, data.counters
    ).with_popularity(scale)
    kept, left_out = tasks_with_labels(subset, split)
    ordinal = tasks_.ordinal()
    has_scale = ordinal is not None and ordinal.name in kept
    for name, reason in left_out.items():
        logger.warning("task %s left out of this model: %s", name, reason)
    val = subset.subset(split == "validation")
    result = fit_ensemble(
        network_config(
            subset,
            groups,
            shape,
            kept,
            scale if has_scale else None,
            loss_scales(subset, split == "train", kept),
        ),
        settings,
        subset.subset(split == "train"),
        val,
        on_epoch=on_epoch,
        epoch_metrics=epoch_metrics,
    )
    recalibrate_heads(result.model, result.normalizer, val)
    config = result.model.config
    if config.popularity is not None and ordinal is not None:
        predicted = evaluate(result.model, result.normalizer, val).predictions[ordinal.name]
        scale = config.popularity.with_residual(predicted, val.targets[ordinal.name])
        result.model.config = replace(config, popularity=scale)
    result.left_out = left_out
    return result


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vq-train", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="dataset .npz written by QualityDataset.save_npz")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on N synthetic rows")
    p.add_argument("--out", type=Path, required=True, help="directory for the saved model")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="without a `split` array in --data: the last fraction of the (time-ordered) rows "
        "is the validation split",
    )
    add_arguments(p, ModelShape)
    add_arguments(p, TrainSettings)
    return p.parse_args(argv)


def _split(data: QualityDataset, path: Path | None, val_fraction: float) -> np.ndarray:
    if path is not None:
        with np.load(path, allow_pickle=False) as z:
            if "split" in z.files:
                return np.asarray(z["split"]).astype(str)
    n_val = max(1, int(round(len(data) * val_fraction)))
    return np.array(["train"] * (len(data) - n_val) + ["validation"] * n_val)


def main(argv: Sequence[str] | None = None) -> int:
    """Train on an .npz (or synthetic) dataset with ``train_model`` and save it to ``--out``.

    Under torchrun (``WORLD_SIZE`` > 1) it initialises the process group itself: NCCL when the
    device is CUDA, gloo otherwise. Only rank 0 writes ``--out``.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    shape = from_arguments(ModelShape, args)
    settings = from_arguments(TrainSettings, args)
    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = resolve_device(settings.device, Dist(0, 1, 0)).type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo")
        started_group = True
    try:
        data = (
            make_synthetic(args.synthetic, seed=settings.seed)
            if args.synthetic is not None
            else QualityDataset.load_npz(args.data)
        )
        split = _split(data, args.data, args.val_fraction)
        result = train_model(data, split, tuple(data.features), shape, settings)
        if dist_context().rank == 0:
            save_model(args.out, result.model, result.model.config, result.normalizer)
            (args.out / "history.json").write_text(json.dumps(result.history, indent=2))
            logger.info(
                "saved model (best epoch %d, val_loss %.4f) to %s",
                result.best_epoch,
                result.best_val_loss,
                args.out,
            )
    finally:
        if started_group:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
