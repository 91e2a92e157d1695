"""A model copy changed after registration is refused, not served (DESIGN §3, §6).

`<lake>/models/quality/v<N>/` holds plain files: an edited `normalizer.json` (a shifted mean, a
dropped whitening rotation) or `config.json` still loads and quietly scores differently. The
SHA-256 of every file is recorded at registration (MLflow version tag + the week's record,
both outside the copy) and checked on every load.
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import safetensors.torch
from mlflow.tracking import MlflowClient

from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry
from vq_assets.core.model.inference import save_model
from vq_assets.core.model.network import NetworkConfig, QualityModel
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.registry import ModelIntegrityError, ModelRecord
from vq_assets.core.model.settings import ModelShape

WEEK = "2026-01-18"
DENSE = {"image_emb": 4, "creator": 3}
TINY = ModelShape(width=8, cross_rank=4, mlp=(16,), members=1, group_dropout=0.0)


def _save_tiny_model(directory: Path) -> None:
    config = NetworkConfig(dense_dims=DENSE, cat_cardinalities={"language": 3}, shape=TINY)
    rng = np.random.default_rng(0)
    features = {name: rng.normal(size=(64, dim)) for name, dim in DENSE.items()}
    normalizer = FeatureNormalizer.fit(features, list(DENSE), whiten=["image_emb"])
    save_model(directory, QualityModel(config), config, normalizer)


@pytest.fixture
def registered(tmp_path, monkeypatch) -> tuple[Lake, ModelRecord, str]:
    """A tiny model registered in a local MLflow, its record read back from the lake."""
    model_dir = tmp_path / "model"
    _save_tiny_model(model_dir)
    lake = Lake.local(tmp_path / "lake")
    # MLflow writes its tracking URI and experiment into os.environ, where later tests would
    # read them: setenv makes monkeypatch restore each (absent included), delenv starts clean.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    before = mlflow.get_tracking_uri()
    try:
        with (
            registry.tracking(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "art")) as client,
            mlflow.start_run() as run,
        ):
            version, hashes = registry.register_version(
                client, run.info.run_id, model_dir, lake, {"week": WEEK}
            )
    finally:
        mlflow.set_tracking_uri(before)
    record = ModelRecord(
        week=WEEK,
        model_version=version,
        run_id=run.info.run_id,
        promoted=True,
        test_mean_spearman=0.5,
        production_before=None,
        production_before_test_mean_spearman=None,
        gate_reason="test",
        best_epoch=1,
        model_path=registry.lake_model_dir(lake, version),
        file_sha256=json.dumps(hashes),
    )
    lake.write_table(lake.asset_dir("quality_model", WEEK), record.to_table())
    return lake, registry.read_record(lake, WEEK), record.model_path


def _shift_a_mean(d: dict) -> None:
    d["image_emb"]["mean"][0] += 0.5


def _drop_a_rotation(d: dict) -> None:
    del d["image_emb"]["rotation"]


def _more_dropout(d: dict) -> None:
    d["shape"]["dropout"] = 0.5


def _edit_json(path: Path, edit) -> None:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


def _flip_a_weight(path: Path) -> None:
    state = safetensors.torch.load_file(path)
    name = sorted(state)[0]
    state[name].view(-1)[0] += 1.0
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})


def test_the_hashes_live_in_the_registry_and_the_record_and_an_untouched_copy_loads(
    registered, tmp_path
):
    lake, record, _ = registered
    hashes = json.loads(record.file_sha256)
    assert hashes == registry.file_sha256(tmp_path / "model")
    assert set(hashes) == {"config.json", "model.safetensors", "normalizer.json"}
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    tags = client.get_model_version(registry.MODEL_NAME, str(record.model_version)).tags
    assert json.loads(tags[registry.SHA256_TAG]) == hashes
    loaded = registry.load_record(lake, record)
    assert loaded.config.dense_dims == DENSE
    assert "image_emb" in loaded.normalizer.rotation


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("normalizer.json", lambda p: _edit_json(p, _shift_a_mean)),
        ("normalizer.json", lambda p: _edit_json(p, _drop_a_rotation)),
        ("config.json", lambda p: _edit_json(p, _more_dropout)),
        ("model.safetensors", _flip_a_weight),
    ],
    ids=["shifted-mean", "dropped-rotation", "config", "weights"],
)
def test_a_tampered_copy_is_refused_naming_version_file_and_hashes(registered, name, tamper):
    lake, record, copy = registered
    path = Path(copy) / name
    tamper(path)
    # Without the check the edit loads silently: that is what the hashes are for.
    registry.load_version(lake, record.model_version)
    with pytest.raises(ModelIntegrityError) as err:
        registry.load_record(lake, record)
    message = str(err.value)
    want = json.loads(record.file_sha256)[name]
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"model v{record.model_version}" in message
    assert name in message and want in message and got in message


def test_a_missing_file_is_refused(registered):
    lake, record, copy = registered
    (Path(copy) / "normalizer.json").unlink()
    with pytest.raises(ModelIntegrityError, match="normalizer.json is missing"):
        registry.load_record(lake, record)


def test_a_record_from_before_hashes_loads_with_a_warning(registered, caplog):
    lake, record, _ = registered
    table = lake.read_table(lake.asset_file("quality_model", WEEK))
    old = table.drop_columns(["file_sha256"])  # as written before this field existed
    lake.write_table(lake.asset_dir("quality_model", WEEK), old)
    legacy = registry.read_record(lake, WEEK)
    assert legacy.file_sha256 is None
    with caplog.at_level(logging.WARNING, logger=registry.__name__):
        loaded = registry.load_record(lake, legacy)
    assert loaded.config.dense_dims == DENSE
    assert "holds no file hashes" in caplog.text and WEEK in caplog.text
