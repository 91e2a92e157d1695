"""Popularity classes (Bilibili) and the task kinds beyond counts and shares."""

import numpy as np
import pytest
import torch

from vq_assets.core.evaluation.metrics import classification_metrics, confusion_matrix
from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.kinds import KINDS
from vq_assets.core.model.popularity import CLASSES, COMPONENTS, PopularityScale
from vq_assets.core.model.settings import ModelShape, TrainSettings
from vq_assets.core.model.synthetic import make_synthetic
from vq_assets.core.model.train import train_model


def _counters(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    plays = rng.poisson(50, n).astype(float)
    return {
        c: plays if c == "plays" else rng.binomial(plays.astype(int), 0.1).astype(float)
        for c in COMPONENTS
    }


def test_scale_is_zscored_on_the_training_rows_and_cut_at_their_quintiles() -> None:
    rng = np.random.default_rng(0)
    counters = _counters(rng, 1000)
    train = np.arange(1000) < 600
    scale = PopularityScale.fit(counters, train, (0.4, 0.3, 0.15, 0.15))
    log_plays = np.log1p(counters["plays"][train])
    assert scale.means["plays"] == pytest.approx(log_plays.mean())
    assert scale.stds["plays"] == pytest.approx(log_plays.std())
    by_hand = sum(
        w
        * (np.log1p(counters[c]) - np.log1p(counters[c][train]).mean())
        / np.log1p(counters[c][train]).std()
        for c, w in zip(COMPONENTS, (0.4, 0.3, 0.15, 0.15), strict=True)
    )
    np.testing.assert_allclose(scale.score(counters), by_hand)
    classes = scale.classes(scale.score(counters))
    shares = np.bincount(classes[train].astype(int), minlength=CLASSES) / train.sum()
    np.testing.assert_allclose(shares, 0.2, atol=0.03)  # quintiles of the training rows
    assert PopularityScale.from_dict(scale.to_dict()) == scale


def test_a_component_the_source_does_not_keep_is_left_out_and_a_null_row_has_no_class() -> None:
    rng = np.random.default_rng(1)
    counters = _counters(rng, 200)
    counters["shares"] = np.full(200, np.nan)  # the platform keeps no share counter
    counters["likes"][3] = np.nan
    scale = PopularityScale.fit(counters, np.ones(200, bool), (0.4, 0.3, 0.15, 0.15))
    assert set(scale.weights) == {"plays", "likes", "comments"}
    score = scale.score(counters)
    assert np.isnan(score[3]) and np.isfinite(np.delete(score, 3)).all()
    assert np.isnan(scale.classes(score)[3])
    none = {c: np.full(5, np.nan) for c in COMPONENTS}
    assert PopularityScale.fit(none, np.ones(5, bool), (1, 1, 1, 1)) is None


def test_class_probabilities_follow_the_residual_spread() -> None:
    scale = PopularityScale({"plays": 1.0}, {"plays": 0.0}, {"plays": 1.0}, (-1.0, 0.0, 1.0, 2.0))
    probs = scale.probabilities(np.array([-5.0, 0.5, 9.0]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs.argmax(axis=1).tolist() == [0, 2, 4]
    wide = scale.with_residual(np.zeros(4), np.array([-3.0, -1.0, 1.0, 3.0]))
    assert wide.residual_sd == pytest.approx(np.sqrt(5.0))
    assert wide.probabilities(np.array([0.5]))[0, 2] < probs[1, 2]  # less sure when noisier


def test_classification_metrics_by_hand() -> None:
    true = np.array([0, 1, 2, 3, 4, 4])
    pred = np.array([0, 2, 2, 3, 2, np.nan])  # the null prediction is not counted
    m = classification_metrics(pred, true, CLASSES)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["within_one_accuracy"] == pytest.approx(4 / 5)
    # F1 per class present: 0 -> 1, 1 -> 0, 2 -> 2*1/(2+2) = 0.5, 3 -> 1, 4 -> 0
    assert m["macro_F1"] == pytest.approx((1 + 0 + 0.5 + 1 + 0) / 5)
    perfect = classification_metrics(true, true, CLASSES)
    assert perfect["QWK"] == pytest.approx(1.0) and perfect["accuracy"] == 1.0
    reversed_ = classification_metrics(4 - true, true, CLASSES)
    assert reversed_["QWK"] < 0
    c = confusion_matrix(np.array([1, 1]), np.array([0, 1]), 3)
    assert c.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]  # rows true, columns predicted


def test_rate_kind_is_the_poisson_likelihood_and_recalibrates_events_exactly() -> None:
    rate = KINDS["rate"]
    out = torch.log(torch.tensor([0.5, 1.5]))
    target, plays = torch.tensor([0.2, 1.2]), torch.tensor([10.0, 4.0])
    per_row, weight = rate.loss(out, target, torch.tensor([True, True]), plays)
    # Poisson NLL per play of k = r * plays events at mean lambda * plays, up to a constant.
    np.testing.assert_allclose(per_row, [0.5 - 0.2 * np.log(0.5), 1.5 - 1.2 * np.log(1.5)], 1e-6)
    assert weight.tolist() == [10.0, 4.0]
    assert rate.natural(out).tolist() == pytest.approx([0.5, 1.5])
    pred, y, n = np.array([0.1, 0.4]), np.array([0.3, 0.6]), np.array([10.0, 5.0])
    shift = rate.shift(pred, y, n)
    assert float((pred * np.exp(shift) * n).sum()) == pytest.approx(float((y * n).sum()))


def test_train_model_leaves_out_a_task_without_labels_and_says_why() -> None:
    data = make_synthetic(600, seed=3)
    data.targets["engagement_rate"] = np.full(len(data), np.nan)  # no like/comment counters
    split = np.array(["train"] * 400 + ["validation"] * 100 + ["test"] * 100)
    shape = ModelShape(width=8, mlp=(16,), members=1, cross_rank=4)
    result = train_model(
        data, split, tuple(data.features), shape, TrainSettings(max_epochs=2, patience=1)
    )
    assert "engagement_rate" not in result.model.config.tasks
    assert "null on every train and validation row" in result.left_out["engagement_rate"]
    assert set(result.model.config.tasks) == set(tasks.names()) - {"engagement_rate"}
    scale = result.model.config.popularity
    assert scale is not None and scale.residual_sd > 0  # measured on the validation rows
    # The scale is the training rows' own: their classes are quintiles.
    train_classes = scale.classes(scale.score(data.subset(split == "train").counters))
    assert np.bincount(train_classes.astype(int)).min() >= 70


def test_without_counters_popularity_is_left_out() -> None:
    data = make_synthetic(300, seed=4)
    plain = QualityDataset(data.features, {"skips": data.targets["skips"]}, data.plays)
    split = np.array(["train"] * 200 + ["validation"] * 100)
    shape = ModelShape(width=8, mlp=(16,), members=1, cross_rank=4)
    result = train_model(plain, split, ("creator",), shape, TrainSettings(max_epochs=1))
    assert result.model.config.tasks == ("skips",)
    assert result.model.config.popularity is None
    assert "its counters is null" in result.left_out["popularity"]


def test_each_loss_is_scaled_by_its_training_labels_spread() -> None:
    """A rare rate is trained relative to its pooled training rate, and a log1p target in units
    of its own variance (virality, mostly under 1, would otherwise barely move the body);
    the binomial and ordinal losses stay as they are."""
    data = make_synthetic(400, seed=6)
    split = np.array(["train"] * 300 + ["validation"] * 100)
    shape = ModelShape(width=8, mlp=(16,), members=1, cross_rank=4)
    result = train_model(data, split, ("creator",), shape, TrainSettings(max_epochs=1))
    train = split == "train"
    expected = {}
    for task in tasks.catalogue():
        y, plays = data.targets[task.name][train], data.plays[train]
        ok = np.isfinite(y)
        if task.kind == "rate":
            expected[task.name] = plays[ok].sum() / (y[ok] * plays[ok]).sum()
        elif task.kind == "log1p":
            expected[task.name] = 1 / np.var(np.log1p(y[ok]))
    assert set(expected) >= {"engagement_rate", "virality", "plays"}
    assert result.model.config.loss_scale == pytest.approx(expected)


def test_a_log1p_loss_factor_is_bounded_when_labels_hardly_vary() -> None:
    log1p = KINDS["log1p"]
    plays = np.ones(3)
    assert log1p.loss_scale(np.full(3, 2.0), plays) == pytest.approx(100.0)  # not 1 / 0
    assert log1p.loss_scale(np.array([5.0]), plays[:1]) == 1.0  # one label has no spread
    spread = np.array([0.0, 1.0, 10.0])
    assert log1p.loss_scale(spread, plays) == pytest.approx(1 / np.var(np.log1p(spread)))
