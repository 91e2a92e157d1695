"""Sweeps: MLflow children under one parent, selected on validation days only, applied only on
request."""

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from mlflow.tracking import MlflowClient

from vq_assets.core.model import sweep
from vq_assets.core.model.settings import ModelShape, TrainSettings, read_applied, with_defaults
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.core.model.train import train_model

# The rows `score_videos` is tested on (shaped like `features.joined_rows`): one helper, so that
# a new feature column reaches both tests.
from vq_assets_tests.core.serving.test_scores import _rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[3]

EPOCHS = 3
SHAPE = ModelShape(width=8, cross_rank=4, mlp=(16,), members=1, group_dropout=0.0)
# patience >= max_epochs: every child trains exactly EPOCHS epochs.
SETTINGS = TrainSettings(max_epochs=EPOCHS, patience=EPOCHS, batch_size=64)
SPACE = {"lr": [1e-4, 1e-2]}


def _table() -> pa.Table:
    table = _rows(400, 0, with_labels=True)
    split = ["train"] * 240 + ["validation"] * 80 + ["test"] * 80
    return table.append_column("split", pa.array(split))


def _sweep(table: pa.Table, tmp_path: Path, name: str) -> sweep.SweepResult:
    return sweep.run_sweep(
        table,
        SPACE,
        shape=SHAPE,
        settings=SETTINGS,
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        artifact_root=str(tmp_path / "artifacts"),
        name=name,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[sweep.SweepResult, Path]:
    tmp = tmp_path_factory.mktemp("sweep")
    return _sweep(_table(), tmp, "grid"), tmp


def test_one_parent_holds_a_child_per_point_with_curves_per_epoch(swept) -> None:
    result, tmp = swept
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    parent = client.get_run(result.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == 2
    assert sorted(json.loads(c.data.tags[sweep.POINT_TAG])["lr"] for c in children) == SPACE["lr"]
    for child in children:
        curves = [k for k in child.data.metrics if k.startswith("member0.")]
        assert {"member0.train_loss", "member0.val_loss"} <= set(curves)
        assert "member0.val_e_avg_watch_time_SpearmanCorr" in curves  # a validation metric
        for key in curves:
            history = client.get_metric_history(child.info.run_id, key)
            assert [m.step for m in history] == list(range(1, EPOCHS + 1)), key
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert artifacts == {"sweep/summary.json", "sweep/score_by_setting.png"}
    assert result.plot.startswith(b"\x89PNG")
    assert result.summary.num_rows == 2


def test_the_best_child_is_the_one_with_the_best_validation_score(swept) -> None:
    result, tmp = swept
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    scores = {
        r["child_run_id"]: client.get_run(r["child_run_id"]).data.metrics[sweep.SCORE]
        for r in result.summary.to_pylist()
    }
    assert len(set(scores.values())) == 2  # the two learning rates differ
    best = max(scores, key=scores.get)
    assert result.best["child_run_id"] == best
    assert client.get_run(result.parent_run_id).data.tags[sweep.BEST_TAG] == best
    assert result.best_point == json.loads(client.get_run(best).data.tags[sweep.POINT_TAG])


def test_test_rows_labels_never_change_the_selection(swept, tmp_path: Path) -> None:
    result, _ = swept
    table = _table()
    test = pc.equal(table.column("split"), "test").to_numpy(zero_copy_only=False)
    for name in ("plays", "skips", "full_watches", "avg_watch_time_s", "skip_rate", "likes"):
        column = table.column(name).to_numpy().astype(np.float64)
        column[test] = np.where(np.arange(test.sum()) % 2, np.nan, 1e9)
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(column))
    corrupted = _sweep(table, tmp_path, "corrupted")
    keep = [sweep.SCORE, "best_val_loss", "lr"]
    assert corrupted.summary.select(keep).equals(result.summary.select(keep))


def test_unknown_or_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        sweep.parse_space({"learning_rate": [1e-3]})
    with pytest.raises(ValueError, match="device"):  # placement, not a model setting
        sweep.parse_space({"device": ["cuda"]})
    with pytest.raises(ValueError, match="width"):
        sweep.parse_space({"width": [0]})
    with pytest.raises(ValueError, match="'mlp'"):
        sweep.parse_space('{"mlp": ["wide"]}')
    with pytest.raises(ValueError, match="'patience'"):
        sweep.parse_space({"patience": []})


def test_random_search_draws_distinct_grid_points_by_seed() -> None:
    space = {"width": [8, 16, 32], "lr": [1e-3, 3e-3], "mlp": [[16], [32, 16]]}
    grid = sweep.points(space)
    assert len(grid) == 12 and grid[1] == {"width": 8, "lr": 1e-3, "mlp": [32, 16]}
    draw = sweep.points(space, trials=5, seed=7)
    assert draw == sweep.points(space, trials=5, seed=7) != sweep.points(space, trials=5, seed=8)
    assert len({json.dumps(p) for p in draw}) == 5 and all(p in grid for p in draw)
    assert len(sweep.points(space, trials=50)) == 12


def test_apply_writes_the_childs_point_where_the_defaults_come_from(swept, tmp_path) -> None:
    result, tmp = swept
    uri = f"sqlite:///{tmp}/mlflow.db"
    target = tmp_path / "applied_settings.json"
    target.write_text(json.dumps({"settings": {"width": 64}, "sources": {"width": "r0"}}))
    changes = sweep.apply_child(uri, result.best["child_run_id"], target)
    assert changes == {"lr": (TrainSettings().lr, result.best["lr"])}
    applied = read_applied(target)
    assert applied["settings"] == {"width": 64, "lr": result.best["lr"]}
    assert applied["sources"]["lr"] == result.best["child_run_id"]
    with pytest.raises(ValueError, match="not a sweep child"):
        sweep.apply_child(uri, result.parent_run_id, target)


def test_applied_values_become_the_dataclass_defaults() -> None:
    @dataclass(frozen=True)
    @with_defaults({"mlp": [8, 4], "lr": 0.5})
    class Toy:
        lr: float = field(default=0.1, metadata={"help": "kept"})
        mlp: tuple[int, ...] = (16,)

    assert Toy() == Toy(lr=0.5, mlp=(8, 4))
    assert Toy.__dataclass_fields__["lr"].metadata["help"] == "kept"


def test_per_epoch_validation_metrics_leave_the_training_unchanged() -> None:
    data = make_synthetic(200, seed=1, dense_dims={"image_emb": 4, "creator": 3})
    split = np.array(["train"] * 150 + ["validation"] * 50)
    plain, measured = (
        train_model(data, split, tuple(data.features), SHAPE, SETTINGS, epoch_metrics=metrics)
        for metrics in (None, sweep.validation_metrics)
    )
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in measured.history]
    assert [h["val_loss"] for h in plain.history] == [h["val_loss"] for h in measured.history]
    assert all("val_e_item_timespent_0to3_SpearmanCorr" in h for h in measured.history)


def test_a_child_that_does_not_train_is_reported_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverges_at_high_lr(data, split, groups, shape, settings, **kw):
        if settings.lr > 1e-3:
            raise RuntimeError("no epoch gave a finite validation loss")
        return train_model(data, split, groups, shape, settings, **kw)

    monkeypatch.setattr(sweep, "train_model", diverges_at_high_lr)
    result = _sweep(_table(), tmp_path, "diverged")
    failed, trained = sorted(result.summary.to_pylist(), key=lambda r: -r["lr"])
    assert np.isnan(failed[sweep.SCORE]) and failed["best_val_loss"] is None
    assert result.best["child_run_id"] == trained["child_run_id"]
    tags = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(failed["child_run_id"]).data.tags
    assert "finite validation loss" in tags[sweep.FAILED_TAG]


def test_an_applied_file_sets_the_defaults_of_everything_derived_from_the_settings(
    tmp_path: Path,
) -> None:
    code = tmp_path / "vq_assets"
    shutil.copytree(REPO / "vq_assets", code, ignore=shutil.ignore_patterns("__pycache__"))
    applied = {"settings": {"lr": 0.003, "mlp": [32]}, "sources": {"lr": "r", "mlp": "r"}}
    (code / "core" / "model" / "applied_settings.json").write_text(json.dumps(applied))
    probe = (
        "from vq_assets.core.model import train\n"
        "from vq_assets.core.model.settings import ModelShape, TrainSettings\n"
        "from vq_assets.defs.training import QualityModelConfig\n"
        "cli = train._parse_args(['--synthetic', '1', '--out', 'x'])\n"
        "print(TrainSettings().lr, QualityModelConfig().lr, cli.lr)\n"
        "print(ModelShape().mlp, QualityModelConfig().mlp, cli.mlp)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == ["0.003 0.003 0.003", "(32,) [32] (32,)"]
