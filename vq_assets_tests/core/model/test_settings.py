"""One source for the model's settings: the asset's run config, the torchrun entry point and the
training bench all derive from ModelShape and TrainSettings, and train the same way."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from vq_assets.core.model import train
from vq_assets.core.model.settings import RUNTIME_FIELDS, ModelShape, TrainSettings, from_arguments
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.defs.training import QualityModelConfig

REPO = Path(__file__).resolve().parents[3]


def _bench_parser():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "bench" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations there
    spec.loader.exec_module(module)
    return module.build_parser()


def test_asset_config_entry_point_and_bench_share_the_production_defaults():
    asset = QualityModelConfig()
    cli = train._parse_args(["--synthetic", "10", "--out", "unused"])
    bench = _bench_parser().parse_args([])
    assert asset.to(ModelShape) == from_arguments(ModelShape, cli) == ModelShape()
    assert from_arguments(ModelShape, bench) == ModelShape()
    runtime = {f: getattr(TrainSettings(), f) for f in RUNTIME_FIELDS}
    assert asset.to(TrainSettings, **runtime) == from_arguments(TrainSettings, cli)
    assert from_arguments(TrainSettings, cli) == TrainSettings()
    # Every field is exposed in all three (none forgotten in one of them).
    names = {f for f in vars(cli)} - {"data", "synthetic", "out", "val_fraction"}
    shape_and_train = set(ModelShape.__dataclass_fields__) | set(TrainSettings.__dataclass_fields__)
    assert names == shape_and_train
    assert set(asset.model_dump()) == shape_and_train - set(RUNTIME_FIELDS) | {"gate_tolerance"}


def test_run_config_maps_back_onto_the_dataclasses():
    config = QualityModelConfig(mlp=[32, 16], members=2, whiten=[])
    assert config.to(ModelShape) == replace(ModelShape(), mlp=(32, 16), members=2)
    assert config.to(TrainSettings, device="cpu").whiten == ()
    with pytest.raises(ValueError, match="group_dropout"):
        QualityModelConfig(group_dropout=1.5).to(ModelShape)


def test_entry_point_trains_exactly_what_the_asset_recipe_trains(tmp_path: Path):
    torch.set_num_threads(1)
    data = make_synthetic(
        240, seed=5, dense_dims={"image_emb": 6, "creator": 3}, cat_cardinalities={"hour": 24}
    )
    split = np.array(["train"] * 170 + ["validation"] * 40 + ["test"] * 30)
    np.savez(
        tmp_path / "set.npz",
        split=split,
        **{f"feature/{k}": v for k, v in data.features.items()},
        **{f"target/{k}": v for k, v in data.targets.items()},
        **{f"counter/{k}": v for k, v in data.counters.items()},
        plays=data.plays,
    )
    small = ["--width", "8", "--mlp", "16", "--members", "2", "--max-epochs", "2"]
    assert (
        train.main(["--data", str(tmp_path / "set.npz"), "--out", str(tmp_path / "m"), *small]) == 0
    )
    shape = replace(ModelShape(), width=8, mlp=(16,), members=2)
    direct = train.train_model(
        data, split, tuple(data.features), shape, replace(TrainSettings(), max_epochs=2)
    )
    saved = safetensors.torch.load_file(tmp_path / "m" / "model.safetensors")
    # Same network, same optimiser, image whitening, ensemble and recalibrated heads.
    assert saved.keys() == direct.model.state_dict().keys()
    for key, value in direct.model.state_dict().items():
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)
