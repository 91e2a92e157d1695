"""One retraining week end to end, without Dagster: train the full model on the week's training
set, log it to MLflow, register it as a new ``vq-quality`` version (with a lake copy), and
promote it through the gate."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa

from vq_assets.core.evaluation.metrics import mean_spearman
from vq_assets.core.evaluation.variants import Trained, mean_test_spearman, train_full_model
from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry
from vq_assets.core.model.inference import save_model
from vq_assets.core.model.promotion import gate, moves_alias
from vq_assets.core.model.registry import ModelRecord
from vq_assets.core.model.settings import ModelShape, TrainSettings


def mlflow_epoch_logger(say: Callable[[str], None], members: int):
    """An ``on_epoch`` that logs each record into the active MLflow run as
    ``member<k>.<name>`` at step = epoch, and says one line per epoch."""

    def on_epoch(record: dict[str, float]) -> None:
        member = int(record.get("member", 0))
        mlflow.log_metrics(
            {f"member{member}.{k}": v for k, v in record.items() if k not in ("epoch", "member")},
            step=int(record["epoch"]),
        )
        say(
            f"member {member + 1}/{members} epoch {int(record['epoch'])}: "
            f"train_loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
            f"({record['samples_per_s']:.0f} samples/s)"
        )

    return on_epoch


def retrain_week(
    table: pa.Table,
    week: str,
    lake: Lake,
    *,
    shape: ModelShape,
    settings: TrainSettings,
    gate_tolerance: float,
    tracking_uri: str,
    artifact_root: str | None,
    params: Mapping[str, Any],
    say: Callable[[str], None] = lambda _: None,
) -> tuple[ModelRecord, Trained]:
    """Train, log, register and gate the model of retraining week ``week``.

    The new model and the model that was production before ``week`` are scored on the same
    test days of ``table``; the record says whether the new one passed the gate. The registry's
    `production` alias moves only when it passed and ``week`` is the newest week with a model.
    """
    with (
        registry.tracking(tracking_uri, artifact_root) as client,
        mlflow.start_run(run_name=f"quality-{week}") as run,
    ):
        registry.log_params({**params, "week": week, "rows": table.num_rows})
        with tempfile.TemporaryDirectory() as ckpt:
            trained = train_full_model(
                table,
                shape,
                replace(settings, checkpoint_dir=ckpt),
                mlflow_epoch_logger(say, shape.members),
            )
        mlflow.log_metrics(trained.test_metrics)
        left_out = trained.result.left_out
        mlflow.set_tags({f"task_left_out.{t}": reason for t, reason in left_out.items()})
        with tempfile.TemporaryDirectory() as tmp:
            model = trained.result.model
            save_model(tmp, model, model.config, trained.result.normalizer)
            version, hashes = registry.register_version(
                client, run.info.run_id, Path(tmp), lake, {"week": week}
            )
        current = registry.production_as_of(lake, week)
        # Both models are scored on the tasks both have: a source that stopped keeping a
        # counter must not make the gate compare means over different tasks.
        common = list(model.config.tasks)
        current_score = None
        if current is not None:
            loaded = registry.load_record(lake, current)
            common = [t for t in common if t in loaded.config.tasks]
            current_score = mean_test_spearman(loaded, trained.test, common)
        new_score = mean_spearman(trained.test_metrics, common)
        promoted, reason = gate(new_score, current_score, gate_tolerance)
        if promoted and moves_alias(week, registry.model_weeks(lake)):
            registry.set_production(client, version)
        mlflow.set_tags({"promoted": str(promoted), "gate": reason})
    record = ModelRecord(
        week=week,
        model_version=version,
        run_id=run.info.run_id,
        promoted=promoted,
        test_mean_spearman=new_score,
        production_before=None if current is None else current.model_version,
        production_before_test_mean_spearman=current_score,
        gate_reason=reason,
        best_epoch=trained.result.best_epoch,
        model_path=lake.uri(registry.lake_model_dir(lake, version)),
        file_sha256=json.dumps(hashes),
    )
    return record, trained
