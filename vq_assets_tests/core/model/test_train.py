import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from vq_assets.core.evaluation.metrics import mean_spearman, task_metrics
from vq_assets.core.model.dataset import QualityDataset, infer_groups
from vq_assets.core.model.distributed import GlobalBatchSampler
from vq_assets.core.model.inference import (
    evaluate,
    load_model,
    predict,
    recalibrate_heads,
    save_model,
)
from vq_assets.core.model.loop import fit
from vq_assets.core.model.network import NetworkConfig, QualityModel
from vq_assets.core.model.normalizer import FeatureNormalizer
from vq_assets.core.model.settings import ModelShape
from vq_assets.core.model.settings import TrainSettings as TrainConfig
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.core.model.train import fit_ensemble, main
from vq_assets_tests.torchrun import torchrun

SMALL = {
    "dense_dims": {"image_emb": 8, "text_emb": 8, "creator": 4},
    "cat_cardinalities": {"language": 5, "duration_bucket": 4},
}
TINY = ModelShape(width=8, cross_rank=4, mlp=(16,), members=1, group_dropout=0.0)


def tiny_shape(**kw) -> ModelShape:
    return replace(TINY, **kw)


# Tiny models: see conftest.one_torch_thread.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny() -> tuple[QualityDataset, QualityDataset, NetworkConfig]:
    data = make_synthetic(300, seed=3, **SMALL)
    config = NetworkConfig(**SMALL, shape=TINY)
    return data.subset(slice(0, 240)), data.subset(slice(240, None)), config


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_normalizer_is_nan_safe_and_serialisable() -> None:
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, np.nan], [np.nan, 5.0, np.nan]])
    norm = FeatureNormalizer.fit({"g": x, "lang": np.array([0, 1, 2])}, ["g"])
    np.testing.assert_allclose(norm.mean["g"], [2.0, 5.0, 0.0])
    np.testing.assert_allclose(norm.std["g"], [1.0, 1.0, 1.0])  # constant / all-NaN -> 1
    out = norm.transform({"g": x, "lang": np.array([0, 1, 2])})
    np.testing.assert_allclose(out["g"], [[-1, 0, 0], [1, 0, 0], [0, 0, 0]])
    assert out["g"].dtype == np.float32 and out["lang"].tolist() == [0, 1, 2]
    again = FeatureNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.transform({"g": x})["g"], out["g"])


def test_whitened_group_is_decorrelated_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    # Four columns driven by two factors of very different size: strongly correlated, and
    # badly conditioned after per-column standardisation.
    factors = rng.standard_normal((2000, 2)) * [5.0, 0.5]
    x = factors @ rng.standard_normal((2, 4)) + 0.05 * rng.standard_normal((2000, 4))
    x[3, 1] = np.nan
    features = {"emb": x, "other": rng.standard_normal((2000, 3))}
    norm = FeatureNormalizer.fit(features, ["emb", "other"], whiten=["emb"])
    out = norm.transform(features)
    cov = np.cov(out["emb"].astype(np.float64), rowvar=False)
    # Decorrelated; the two factors come out at unit variance, and the near-empty noise
    # directions are damped (WHITEN_EPS), not blown up to unit variance.
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-6)
    variances = np.sort(np.diag(cov))
    np.testing.assert_allclose(variances[2:], 1.0, atol=0.05)
    assert variances[:2].max() < 0.5
    assert "other" not in norm.rotation
    again = FeatureNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.transform(features)["emb"], out["emb"])
    with pytest.raises(ValueError, match="cannot whiten \\['img'\\]"):
        FeatureNormalizer.fit(features, ["emb"], whiten=["img"])


def test_global_batches_split_exactly_across_ranks() -> None:
    one = GlobalBatchSampler(23, 8, seed=5)
    two = [GlobalBatchSampler(23, 8, rank=r, world_size=2, seed=5) for r in range(2)]
    for epoch in (1, 2):
        for s in (one, *two):
            s.set_epoch(epoch)
        batches = list(one)
        shares = [list(s) for s in two]
        assert len(batches) == len(shares[0]) == len(shares[1]) == 3
        assert [a + b for a, b in zip(*shares, strict=True)] == batches
    one.set_epoch(1)
    first = list(one)
    one.set_epoch(2)
    assert list(one) != first  # reshuffled every epoch
    assert sorted(sum(first, [])) == list(range(23))


def test_fit_is_seeded_and_reports_every_epoch(tiny) -> None:
    train, val, config = tiny
    cfg = TrainConfig(batch_size=64, max_epochs=2, patience=5, seed=11)
    records: list[dict] = []
    rng_before = torch.get_rng_state()
    a = fit(config, cfg, train, val, on_epoch=records.append)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is untouched
    b = fit(config, cfg, train, val)
    c = fit(config, replace(cfg, seed=12), train, val)
    _assert_same_weights(_weights(a.model), _weights(b.model))
    assert not torch.equal(a.model.heads.heads["skips"].weight, c.model.heads.heads["skips"].weight)
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "val_loss", "val_loss_skip_rate", "samples_per_s"):
        assert math.isfinite(records[-1][key]), key
    assert records == a.history
    # the normalizer is fitted on the training rows only
    np.testing.assert_allclose(
        a.normalizer.mean["creator"], np.nanmean(train.features["creator"], axis=0), rtol=1e-5
    )


def test_resume_after_crash_matches_uninterrupted_run(tiny, tmp_path: Path) -> None:
    train, val, config = tiny
    config = replace(config, shape=tiny_shape(dropout=0.2))  # dropout RNG must resume too
    cfg = TrainConfig(batch_size=64, max_epochs=4, patience=10, seed=2)
    straight = fit(config, cfg, train, val)

    ckpt = str(tmp_path / "ckpt")
    fit(config, replace(cfg, max_epochs=2, checkpoint_dir=ckpt), train, val)  # "crashes" here
    seen: list[int] = []
    resumed = fit(
        config,
        replace(cfg, checkpoint_dir=ckpt),
        train,
        val,
        on_epoch=lambda r: seen.append(r["epoch"]),
    )
    assert seen == [3, 4]
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    _assert_same_weights(_weights(straight.model), _weights(resumed.model))

    with pytest.raises(ValueError, match="checkpoint"):
        fit(config, replace(cfg, lr=0.1, checkpoint_dir=ckpt), train, val)


def test_early_stopping_restores_the_best_epoch(tiny) -> None:
    train, val, config = tiny
    noisy_val = replace(
        val, targets={k: np.random.default_rng(0).permutation(v) for k, v in val.targets.items()}
    )
    result = fit(
        config, TrainConfig(lr=2e-2, batch_size=32, max_epochs=30, patience=2), train, noisy_val
    )
    assert result.stopped_early and len(result.history) == result.best_epoch + 2
    val_losses = [h["val_loss"] for h in result.history]
    assert result.best_val_loss == min(val_losses) == val_losses[result.best_epoch - 1]
    ev = evaluate(result.model, result.normalizer, noisy_val)
    assert sum(ev.losses.values()) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_save_load_round_trip_gives_identical_predictions(tiny, tmp_path: Path) -> None:
    train, val, config = tiny
    result = fit(config, TrainConfig(batch_size=64, max_epochs=1), train, val)
    save_model(tmp_path, result.model, config, result.normalizer)
    assert {p.name for p in tmp_path.iterdir()} == {
        "model.safetensors",
        "config.json",
        "normalizer.json",
    }
    loaded = load_model(tmp_path)
    assert loaded.config == config
    unlabelled = QualityDataset(features=val.features)  # scoring needs no labels
    before = predict(result.model, result.normalizer, unlabelled)
    after = predict(loaded.model, loaded.normalizer, unlabelled)
    small_batches = predict(loaded.model, loaded.normalizer, unlabelled, batch_size=7)
    assert before.keys() == set(config.tasks)
    for task in before:
        assert before[task].shape == (len(val),)
        np.testing.assert_array_equal(before[task], after[task])
        np.testing.assert_allclose(small_batches[task], after[task], rtol=1e-5)
    assert (before["skip_rate"] > 0).all() and (before["skip_rate"] < 1).all()


def test_model_learns_synthetic_targets() -> None:
    data = make_synthetic(3000, seed=1)
    dense, cats, _ = infer_groups(data)
    config = NetworkConfig(dense, cats, tiny_shape(width=32, cross_rank=16, mlp=(64,), dropout=0.0))
    train, val = data.subset(slice(0, 2400)), data.subset(slice(2400, None))
    result = fit(config, TrainConfig(lr=3e-3, batch_size=128, max_epochs=6, patience=2), train, val)
    ev = evaluate(result.model, result.normalizer, val)
    metrics = task_metrics(ev.predictions, val.targets, val.plays, ev.losses)
    # Engagement and virality carry more label noise by construction (synthetic.py).
    assert mean_spearman(metrics) > 0.75, metrics
    assert min(v for k, v in metrics.items() if k.endswith("SpearmanCorr")) > 0.5, metrics
    assert metrics["val_p_item_skip_ctr_7d_calibration"] == pytest.approx(1.0, abs=0.1)
    assert metrics["val_e_engagement_rate_calibration"] == pytest.approx(1.0, abs=0.1)
    assert metrics["val_loss"] == pytest.approx(result.best_val_loss, rel=1e-5)


def test_precision_options_on_cpu(tiny) -> None:
    train, val, config = tiny
    result = fit(config, TrainConfig(batch_size=128, max_epochs=1, precision="bf16"), train, val)
    assert math.isfinite(result.best_val_loss)
    with pytest.raises(ValueError, match="fp16"):
        fit(config, TrainConfig(max_epochs=1, precision="fp16"), train, val)


def test_main_smoke_on_npz(tmp_path: Path) -> None:
    data = make_synthetic(120, seed=0, **SMALL)
    data.save_npz(tmp_path / "set.npz")
    out = tmp_path / "model"
    assert (
        main(
            [
                "--data",
                str(tmp_path / "set.npz"),
                "--out",
                str(out),
                "--max-epochs",
                "1",
                "--members",
                "1",
                "--batch-size",
                "32",
                "--width",
                "8",
                "--mlp",
                "16",
            ]
        )
        == 0
    )
    loaded = load_model(out)
    assert loaded.config.dense_dims == SMALL["dense_dims"]
    assert len(json.loads((out / "history.json").read_text())) == 1


def test_torchrun_two_ranks_match_one_process(tmp_path: Path) -> None:
    args = [
        "--synthetic",
        "400",
        "--max-epochs",
        "2",
        "--members",
        "1",
        "--batch-size",
        "64",
        # Dropout masks are drawn per rank's share of a batch: equal only without dropout.
        "--dropout",
        "0",
        "--group-dropout",
        "0",
        "--width",
        "16",
        "--mlp",
        "32",
        "--seed",
        "4",
    ]
    torchrun("vq_assets.core.model.train", [*args, "--out", str(tmp_path / "ddp")], timeout=120)
    main([*args, "--out", str(tmp_path / "single")])
    ddp = safetensors.torch.load_file(tmp_path / "ddp" / "model.safetensors")
    single = safetensors.torch.load_file(tmp_path / "single" / "model.safetensors")
    _assert_same_weights(ddp, single, atol=1e-5)
    # and training moved the weights: the comparison is not between two initialisations
    torch.manual_seed(4)
    init = QualityModel(load_model(tmp_path / "single").config).state_dict()
    assert not torch.allclose(init["cross.U.0"], single["cross.U.0"])


def test_fit_rejects_a_task_without_labels(tiny) -> None:
    train, val, config = tiny
    unplayed = replace(val, targets={**val.targets, "skip_rate": np.full(len(val), np.nan)})
    with pytest.raises(ValueError, match="validation rows have no labels for tasks"):
        fit(config, TrainConfig(max_epochs=1), train, unplayed)


def test_ensemble_averages_its_seeded_members_and_round_trips(tiny, tmp_path: Path) -> None:
    train, val, config = tiny
    cfg = TrainConfig(batch_size=64, max_epochs=1)
    ensemble = fit_ensemble(replace(config, shape=tiny_shape(members=2)), cfg, train, val)
    singles = [fit(config, replace(cfg, seed=s), train, val) for s in (0, 1)]
    features = QualityDataset(features=val.features)
    got = predict(ensemble.model, ensemble.normalizer, features)
    members = [predict(r.model, r.normalizer, features) for r in singles]
    # Averaged in training space: the logit for the skip rate, log1p for the counts.
    logit = np.mean([np.log(m["skip_rate"] / (1 - m["skip_rate"])) for m in members], axis=0)
    np.testing.assert_allclose(got["skip_rate"], 1 / (1 + np.exp(-logit)), rtol=1e-5)
    log1p = np.mean([np.log1p(m["skips"]) for m in members], axis=0)
    np.testing.assert_allclose(got["skips"], np.expm1(log1p), rtol=1e-4)
    save_model(tmp_path, ensemble.model, ensemble.model.config, ensemble.normalizer)
    loaded = load_model(tmp_path)
    assert loaded.config.shape.members == 2
    again = predict(loaded.model, loaded.normalizer, features)
    for task in got:
        np.testing.assert_array_equal(got[task], again[task])


def test_recalibration_matches_validation_levels_and_keeps_rankings(tiny) -> None:
    train, val, config = tiny
    result = fit_ensemble(
        replace(config, shape=tiny_shape(members=2, group_dropout=0.5)),
        TrainConfig(max_epochs=2),
        train,
        val,
    )
    before = evaluate(result.model, result.normalizer, val).predictions
    shifts = recalibrate_heads(result.model, result.normalizer, val)
    after = evaluate(result.model, result.normalizer, val).predictions
    assert set(shifts) == set(config.tasks)
    plays, rate = val.plays, val.targets["skip_rate"]
    ok = np.isfinite(rate) & (plays > 0)
    # Predicted skips equal realised skips; log1p heads have zero mean residual.
    assert (after["skip_rate"][ok] * plays[ok]).sum() == pytest.approx(
        (rate[ok] * plays[ok]).sum(), rel=1e-5
    )
    y = val.targets["skips"]
    has = np.isfinite(y)
    assert np.mean(np.log1p(y[has]) - np.log1p(after["skips"][has])) == pytest.approx(0, abs=1e-5)
    for task in config.tasks:  # a constant shift in training space: rankings unchanged
        np.testing.assert_array_equal(np.argsort(before[task]), np.argsort(after[task]))
