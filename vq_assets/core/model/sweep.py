"""Sweeps over the quality model's settings: a grid, or a seeded random draw from it, trained as
MLflow child runs under one parent and selected on the validation days only.

A space names fields of ``ModelShape`` and ``TrainSettings`` with the values to try::

    {"lr": [1e-3, 3e-3], "width": [32, 64]}

Every child trains through ``train_model`` (the weekly model's recipe) from the base settings
with its point applied, logs its curves per epoch, and is scored by its mean validation
Spearman over tasks. The sweep never chooses the weekly model's settings itself: ``apply_child``
is the explicit step that writes a child's point into ``settings.APPLIED_FILE``.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from math import nan
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from mlflow.tracking import MlflowClient

from vq_assets.core.evaluation.figures import png
from vq_assets.core.evaluation.metrics import mean_spearman, task_metrics
from vq_assets.core.evaluation.variants import split_of, test_metrics
from vq_assets.core.model import registry
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, groups_for, to_dataset
from vq_assets.core.model.inference import evaluate
from vq_assets.core.model.network import QualityModel
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.retrain import mlflow_epoch_logger
from vq_assets.core.model.settings import (
    APPLIED_FILE,
    RUNTIME_FIELDS,
    ModelShape,
    TrainSettings,
    fields_of,
    is_sequence,
    read_applied,
)
from vq_assets.core.model.train import train_model

Point = dict[str, Any]
SCORE = "selection_score"
# A child's point (what `apply_child` reads back), the parent's pick, a child that did not train.
POINT_TAG = "vq.sweep.point"
BEST_TAG = "vq.sweep.best_child"
FAILED_TAG = "vq.sweep.failed"


def sweepable() -> dict[str, Any]:
    """``{field: type}`` of the settings a sweep may vary (placement fields are not settings
    of the model)."""
    return {
        f.name: tp
        for cls in (ModelShape, TrainSettings)
        for f, tp in fields_of(cls, RUNTIME_FIELDS)
    }


def _is(tp: Any, value: Any) -> bool:
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """``value`` as field ``name`` holds it (lists become tuples), or a ValueError naming both."""
    if is_sequence(tp):
        item = typing.get_args(tp)[0]
        if isinstance(value, list | tuple) and all(_is(item, v) for v in value):
            return tuple(value)
    elif typing.get_origin(tp) is Literal:
        if value in typing.get_args(tp):
            return value
    else:
        base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
        if _is(base, value) or (value is None and type(None) in typing.get_args(tp)):
            return value
    raise ValueError(f"sweep value {value!r} does not fit setting {name!r} ({tp})")


def settings_at(
    point: Point, shape: ModelShape, settings: TrainSettings
) -> tuple[ModelShape, TrainSettings]:
    """The base ``shape`` and ``settings`` with ``point`` applied, each value checked."""
    types = sweepable()
    unknown = [k for k in point if k not in types]
    if unknown:
        raise ValueError(f"unknown sweep setting(s) {unknown}; sweepable: {sorted(types)}")
    values = {k: _coerce(k, types[k], v) for k, v in point.items()}
    out = []
    for base in (shape, settings):
        mine = {k: v for k, v in values.items() if k in base.__dataclass_fields__}
        try:
            out.append(replace(base, **mine))
        except ValueError as e:
            raise ValueError(f"sweep point {mine} is not valid: {e}") from e
    return out[0], out[1]


def parse_space(text: str | Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """A space from JSON text (or a mapping): every key a sweepable setting, every value a
    non-empty list of candidates that each make valid settings."""
    space = json.loads(text) if isinstance(text, str) else dict(text)
    if not isinstance(space, dict) or not space:
        raise ValueError(f"a sweep space is a non-empty JSON object of lists, not {text!r}")
    for key, values in space.items():
        if not isinstance(values, list | tuple) or not values:
            raise ValueError(f"sweep setting {key!r} needs a non-empty list, not {values!r}")
        for v in values:
            settings_at({key: v}, ModelShape(), TrainSettings())
    return {k: list(v) for k, v in space.items()}


def points(space: Mapping[str, list[Any]], trials: int | None = None, seed: int = 0) -> list[Point]:
    """The grid of ``space`` (first key slowest), or ``trials`` distinct grid points drawn with
    ``seed``, in grid order."""
    keys = list(space)
    sizes = [len(space[k]) for k in keys]
    total = int(np.prod(sizes))
    if trials is None:
        chosen = range(total)
    else:
        if trials < 1:
            raise ValueError(f"a random sweep needs trials >= 1, not {trials}")
        draw = np.random.default_rng(seed).choice(total, size=min(trials, total), replace=False)
        chosen = sorted(int(i) for i in draw)
    return [
        {k: space[k][int(i)] for k, i in zip(keys, np.unravel_index(n, sizes), strict=True)}
        for n in chosen
    ]


def selection_rows(table: pa.Table) -> pa.Table:
    """The training set without its test rows: a sweep selects on validation days, and what it
    never holds it cannot leak into the choice."""
    return table.filter(pc.not_equal(table.column("split"), "test"))


def validation_metrics(
    model: QualityModel, normalizer: FeatureNormalizer, val: QualityDataset
) -> dict[str, float]:
    """The §6 metrics (without popularity classes) of ``model`` on the validation rows: each
    child's per-epoch curves."""
    ev = evaluate(model, normalizer, val)
    return task_metrics(ev.predictions, val.targets, val.plays, ev.losses)


@dataclass
class SweepResult:
    """The parent run, one summary row per child (best first is not implied: grid order),
    the selected child's row, and the score-by-setting plot."""

    parent_run_id: str
    summary: pa.Table
    best: dict[str, Any]
    plot: bytes

    @property
    def best_point(self) -> Point:
        return json.loads(self.best["point"])


def _cell(value: Any) -> Any:
    return json.dumps(list(value)) if isinstance(value, list | tuple) else value


def _train_child(
    data: QualityDataset,
    split: np.ndarray,
    point: Point,
    shape: ModelShape,
    settings: TrainSettings,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One child run (active): train, log curves and validation metrics; its summary row."""
    registry.log_params({**asdict(shape), **asdict(settings)})
    mlflow.set_tag(POINT_TAG, json.dumps(point))
    result = train_model(
        data,
        split,
        groups_for(FULL_MODEL, data, split == "train"),
        shape,
        settings,
        on_epoch=mlflow_epoch_logger(say, shape.members),
        epoch_metrics=validation_metrics,
    )
    metrics = test_metrics(result, data.subset(split == "validation"))[0]
    score = mean_spearman(metrics, list(result.model.config.tasks))
    mlflow.log_metrics({**metrics, SCORE: score})
    spearman = {k: v for k, v in metrics.items() if k.endswith("_SpearmanCorr")}
    return {
        "child_run_id": mlflow.active_run().info.run_id,
        "point": json.dumps(point),
        **{k: _cell(v) for k, v in point.items()},
        SCORE: score,
        "best_val_loss": float(result.best_val_loss),
        "best_epoch": result.best_epoch,
        "epochs_trained": max(int(h["epoch"]) for h in result.history),
        **spearman,
    }


def score_plot(rows: list[dict[str, Any]], keys: Sequence[str]):
    """The selection score of every child against each swept setting, one panel per setting
    (a log axis for a positive numeric setting spanning 10x or more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6), squeeze=False)
    scores = [r[SCORE] for r in rows]
    for ax, key in zip(axes[0], keys, strict=True):
        xs = [r[key] for r in rows]
        if all(isinstance(x, int | float) for x in xs):
            ax.scatter(xs, scores)
            if min(xs) > 0 and max(xs) >= 10 * min(xs):
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], scores)
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=key, ylabel="mean validation Spearman", title=f"score by {key}")
    fig.tight_layout()
    return fig


def run_sweep(
    table: pa.Table,
    space: str | Mapping[str, list[Any]],
    *,
    shape: ModelShape,
    settings: TrainSettings,
    tracking_uri: str,
    artifact_root: str | None,
    name: str,
    trials: int | None = None,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> SweepResult:
    """Train every point of ``space`` (``trials``: a seeded random draw of them) from the base
    ``shape`` and ``settings`` on ``table``'s train rows, and report the child with the best
    mean validation Spearman. ``table``'s test rows are dropped before anything is read."""
    space = parse_space(space)
    todo = points(space, trials, seed)
    # Every point checked against the base before the first child trains.
    children = [settings_at(point, shape, settings) for point in todo]
    rows_table = selection_rows(table)
    data, split = to_dataset(rows_table), split_of(rows_table)
    rows = []
    with (
        registry.tracking(tracking_uri, artifact_root),
        mlflow.start_run(run_name=f"sweep-{name}") as parent,
    ):
        registry.log_params(
            {
                **asdict(shape),
                **asdict(settings),
                **(params or {}),
                "space": json.dumps(space),
                "trials": trials,
                "search_seed": seed,
            }
        )
        for i, (point, (child_shape, child_settings)) in enumerate(
            zip(todo, children, strict=True)
        ):
            say(f"sweep child {i + 1}/{len(todo)}: {point}")
            with mlflow.start_run(run_name=f"sweep-{name}-{i}", nested=True) as child:
                try:
                    rows.append(_train_child(data, split, point, child_shape, child_settings, say))
                except RuntimeError as e:  # diverged: a finding of the sweep, not its end
                    say(f"sweep child {i + 1} did not train: {e}")
                    mlflow.set_tag(FAILED_TAG, str(e)[:500])
                    rows.append(
                        {"child_run_id": child.info.run_id, "point": json.dumps(point), SCORE: nan}
                        | {k: _cell(v) for k, v in point.items()}
                    )
        scored = [r for r in rows if np.isfinite(r[SCORE])]
        if not scored:
            raise RuntimeError(f"no sweep child has a finite validation score: {rows}")
        best = max(scored, key=lambda r: r[SCORE])
        # Columns of every row (a failed child has no losses): missing cells are null.
        summary = pa.Table.from_pylist(rows, schema=pa.Table.from_pylist(scored).schema)
        plot = score_plot(rows, list(space))
        mlflow.log_table(summary.to_pandas(), "sweep/summary.json")
        mlflow.log_figure(plot, "sweep/score_by_setting.png")
        mlflow.log_metric(f"best_{SCORE}", best[SCORE])
        mlflow.set_tag(BEST_TAG, best["child_run_id"])
    return SweepResult(parent.info.run_id, summary, best, png(plot))


def apply_child(
    tracking_uri: str, run_id: str, path: Path = APPLIED_FILE
) -> dict[str, tuple[Any, Any]]:
    """Write sweep child ``run_id``'s point into the applied settings file (kept settings of
    earlier applies stay); returns ``{setting: (default before, applied)}``. The weekly
    ``quality_model`` trains with it once the code location is reloaded."""
    tags = MlflowClient(tracking_uri).get_run(run_id).data.tags
    if POINT_TAG not in tags:
        raise ValueError(f"MLflow run {run_id} is not a sweep child (no {POINT_TAG} tag)")
    point = json.loads(tags[POINT_TAG])
    shape, settings = settings_at(point, ModelShape(), TrainSettings())
    now = {**asdict(shape), **asdict(settings)}
    before = {**asdict(ModelShape()), **asdict(TrainSettings())}
    applied = read_applied(path)
    applied["settings"] |= {k: now[k] for k in point}
    applied["sources"] |= dict.fromkeys(point, run_id)
    path.write_text(json.dumps(applied, indent=2, sort_keys=True) + "\n")
    return {k: (before[k], now[k]) for k in point}
