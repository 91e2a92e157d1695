"""MLflow tracking and the `vq-quality` model registry, plus the lake copy of each version."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from vq_assets.core.lake.store import Lake
from vq_assets.core.model.inference import (
    CONFIG_FILE,
    MODEL_FILE,
    NORMALIZER_FILE,
    LoadedModel,
    load_model,
)

log = logging.getLogger(__name__)

EXPERIMENT = "vq-quality"
MODEL_NAME = "vq-quality"
PRODUCTION_ALIAS = "production"
# The model version tag holding {file name: SHA-256} of the files registered.
SHA256_TAG = "file_sha256"


class ModelIntegrityError(RuntimeError):
    """A model copy's files are not the files that were registered; the message names them."""


def default_tracking_uri(home: str) -> str:
    """The local MLflow store under `home` (VQ_HOME), when no MLFLOW_TRACKING_URI is set."""
    return f"sqlite:///{home}/mlflow/mlflow.db"


@contextmanager
def tracking(tracking_uri: str, artifact_root: str | None = None) -> Iterator[MlflowClient]:
    """Point MLflow at `tracking_uri` and make sure the experiment exists."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    mlflow.set_experiment(EXPERIMENT)
    yield client


def log_params(params: Mapping[str, Any]) -> None:
    mlflow.log_params({k: str(v)[:500] for k, v in params.items()})


def file_sha256(model_dir: Path) -> dict[str, str]:
    """{file name: SHA-256 hex digest} of every file in `model_dir`."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(model_dir.iterdir())
        if f.is_file()
    }


def register_version(
    client: MlflowClient, run_id: str, model_dir: Path, lake: Lake, tags: Mapping[str, str]
) -> tuple[int, dict[str, str]]:
    """Log the model files to the run, register a new `vq-quality` version, and keep the same
    files at `<lake>/models/quality/v<N>/` (safetensors + JSON: nothing to unpickle).

    Returns the version and the files' SHA-256. The hashes are kept outside the lake copy,
    where whoever can rewrite the copy cannot rewrite them with it: the canonical place is the
    model version's `file_sha256` tag in the registry, and the week's `ModelRecord` carries the
    same mapping so that loaders check a copy without a round trip to the tracking server.
    No manifest is written beside the files: one rewritten along with them proves nothing.
    """
    hashes = file_sha256(model_dir)
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    try:
        client.get_registered_model(MODEL_NAME)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(MODEL_NAME)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    mv = client.create_model_version(
        MODEL_NAME, source, run_id=run_id, tags={**tags, SHA256_TAG: json.dumps(hashes)}
    )
    version = int(mv.version)
    copy_to_lake(model_dir, lake, version)
    return version, hashes


def lake_model_dir(lake: Lake, version: int) -> str:
    return lake.path("models", "quality", f"v{version}")


def copy_to_lake(model_dir: Path, lake: Lake, version: int) -> None:
    target = lake_model_dir(lake, version)
    for f in sorted(model_dir.iterdir()):
        lake.write_bytes(f"{target}/{f.name}", f.read_bytes())


@contextmanager
def fetch_from_lake(lake: Lake, version: int) -> Iterator[Path]:
    """A local folder holding version `version`'s files (a temporary copy when on S3)."""
    source = lake_model_dir(lake, version)
    if not lake.is_s3:
        if not os.path.isdir(source):
            raise FileNotFoundError(f"model v{version} is missing at {source}")
        yield Path(source)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for path in lake.list_files(source, suffix=""):
            name = path.rsplit("/", 1)[-1]
            Path(tmp, name).write_bytes(lake.read_bytes("s3://" + path))
        yield Path(tmp)


def set_production(client: MlflowClient, version: int) -> None:
    client.set_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS, str(version))


def production_version(client: MlflowClient) -> int | None:
    try:
        return int(client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS).version)
    except mlflow.exceptions.MlflowException:
        return None


def verify_files(directory: Path, version: int, expected: Mapping[str, str]) -> None:
    """Raise `ModelIntegrityError` unless every file `load_model` reads is in `expected` and
    every file in `expected` is in `directory` with that SHA-256."""
    uncovered = sorted({MODEL_FILE, CONFIG_FILE, NORMALIZER_FILE} - expected.keys())
    if uncovered:
        raise ModelIntegrityError(f"model v{version}: no recorded SHA-256 for {uncovered}")
    for name, want in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            raise ModelIntegrityError(f"model v{version}: {name} is missing from {directory}")
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != want:
            raise ModelIntegrityError(
                f"model v{version}: {name} has SHA-256 {got}, but {want} was registered; "
                f"the copy in {directory} changed after registration"
            )


def load_version(
    lake: Lake, version: int, expected_sha256: Mapping[str, str] | None = None
) -> LoadedModel:
    """Model version `version`, loaded from its lake copy; with `expected_sha256` ({file name:
    SHA-256} as registered), only once every file is checked against it. `load_record` passes
    the hashes a record holds."""
    with fetch_from_lake(lake, version) as directory:
        if expected_sha256 is not None:
            verify_files(directory, version, expected_sha256)
        return load_model(directory)


def load_record(lake: Lake, record: ModelRecord) -> LoadedModel:
    """The model of `record`, from its lake copy, checked against the record's file hashes."""
    if record.file_sha256 is None:
        # Records written before hashes were kept: their lakes must keep serving.
        log.warning(
            "quality_model record of week %s holds no file hashes: model v%d is loaded "
            "unchecked (retrain the week to record them)",
            record.week,
            record.model_version,
        )
        return load_version(lake, record.model_version)
    return load_version(lake, record.model_version, json.loads(record.file_sha256))


@dataclass(frozen=True)
class ModelRecord:
    """What ``quality_model[W]`` wrote: one row per retraining week, read back by scoring, the
    gate and the sensor (the lake, not the registry alias, so that a replay sees the model that
    was production then)."""

    week: str
    model_version: int
    run_id: str
    promoted: bool
    test_mean_spearman: float
    production_before: int | None
    production_before_test_mean_spearman: float | None
    gate_reason: str
    best_epoch: int
    model_path: str
    # JSON {file name: SHA-256} of the registered files (`register_version`); None in records
    # written before hashes were kept.
    file_sha256: str | None = None

    def to_table(self) -> pa.Table:
        return pa.Table.from_pylist([asdict(self)])

    @classmethod
    def from_table(cls, table: pa.Table) -> ModelRecord:
        row = table.to_pylist()[0]
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})


def read_record(lake: Lake, week: str) -> ModelRecord:
    return ModelRecord.from_table(lake.read_table(lake.asset_file("quality_model", week)))


def model_weeks(lake: Lake) -> list[str]:
    """Weeks with a quality_model record, oldest first."""
    return lake.list_days(lake.asset_dir("quality_model"))


def promoted_records(lake: Lake) -> list[ModelRecord]:
    """The quality_model records that passed the promotion gate, oldest week first."""
    records = [read_record(lake, week) for week in model_weeks(lake)]
    return [r for r in records if r.promoted]


def production_as_of(lake: Lake, before: str) -> ModelRecord | None:
    """The record of the latest promoted model among the weeks before `before`."""
    earlier = [r for r in promoted_records(lake) if r.week < before]
    return earlier[-1] if earlier else None


def log_evaluation(
    rows: list[dict],
    figures: dict,
    demo: pa.Table,
    series: dict[str, list[tuple[int, float]]] | None = None,
) -> None:
    """Evaluation tables and plots into the active MLflow run (the model's own run); `series`
    are metric histories (name -> (step, value)), e.g. a fine-tuning's loss per step."""
    now = int(time.time() * 1000)
    metrics = [
        # MLflow metric names allow letters, digits, _ - . / and spaces only.
        Metric(re.sub(r"[^\w\-./ ]", "_", name), float(value), now, step)
        for name, value, step in [
            (f"{r['section']}.{r['variant']}.{r['slice']}.{r['metric']}", r["value"], 0)
            for r in rows
            if r["section"] != "model" and np.isfinite(r["value"])
        ]
        + [(name, v, step) for name, points in (series or {}).items() for step, v in points]
    ]
    # One request per 1000 metrics (MLflow's batch limit), not one per metric.
    run_id = mlflow.active_run().info.run_id
    for i in range(0, len(metrics), 1000):
        MlflowClient().log_batch(run_id, metrics=metrics[i : i + 1000])
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"evaluation/{name}")
    mlflow.log_table(demo.to_pandas(), "evaluation/demo_lists.json")
