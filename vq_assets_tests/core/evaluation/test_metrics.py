import math

import numpy as np
import pytest

from vq_assets.core.evaluation.metrics import (
    count,
    log1p_r2,
    mae,
    mean_spearman,
    skip_calibration,
    spearman,
    spearman_gap,
    task_metrics,
)

NAN = math.nan


def test_mae_and_count_ignore_null_labels() -> None:
    pred = np.array([1.0, 2.0, 10.0, 4.0])
    true = np.array([2.0, 2.0, NAN, 1.0])
    assert mae(pred, true) == pytest.approx((1 + 0 + 3) / 3)
    assert count(true) == 3
    assert math.isnan(mae(pred, np.full(4, NAN)))


def test_log1p_r2_by_hand() -> None:
    true = np.expm1(np.array([0.0, 1.0, 2.0, NAN]))
    pred = np.expm1(np.array([0.5, 1.0, 1.5, 9.0]))
    # log space: y = [0, 1, 2], yhat = [.5, 1, 1.5] -> SS_res = .5, SS_tot = 2
    assert log1p_r2(pred, true) == pytest.approx(1 - 0.5 / 2)
    assert log1p_r2(true, true) == pytest.approx(1.0)
    assert math.isnan(log1p_r2(pred, np.ones(4)))  # constant labels: R² undefined


def test_spearman_by_hand() -> None:
    true = np.array([1.0, 2.0, 3.0, 4.0, NAN])
    assert spearman(np.array([10.0, 20.0, 30.0, 40.0, 0.0]), true) == pytest.approx(1.0)
    # ranks [1, 2, 4, 3] vs [1, 2, 3, 4]: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2.0, 9.0, 5.0, 0.0]), true) == pytest.approx(0.8)
    assert math.isnan(spearman(np.ones(5), true))


def test_calibration_is_predicted_over_actual_skips_on_played_rows() -> None:
    plays = np.array([10.0, 5.0, 0.0])
    skip_rate = np.array([0.2, 0.6, NAN])  # skips = 2, 3
    pred = np.array([0.3, 0.4, 0.9])  # expected skips = 3, 2; the unplayed row is ignored
    assert skip_calibration(pred, skip_rate, plays) == pytest.approx((3 + 2) / (2 + 3))
    assert skip_calibration(pred * 2, skip_rate, plays) == pytest.approx(2.0)
    assert math.isnan(skip_calibration(pred, np.zeros(3), plays))


def test_task_metrics_names_and_values() -> None:
    plays = np.array([4.0, 0.0, 2.0, 8.0])
    labels = {
        "skips": np.array([1.0, 0.0, 2.0, 4.0]),
        "avg_watch_time_s": np.array([3.0, NAN, 1.0, 7.0]),
        "full_watches": np.array([0.0, 0.0, 1.0, 3.0]),
        "skip_rate": np.array([0.25, NAN, 1.0, 0.5]),
    }
    preds = {
        "skips": np.array([1.0, 0.5, 1.0, 5.0]),
        "avg_watch_time_s": np.array([2.0, 9.0, 2.0, 6.0]),
        "full_watches": np.array([0.0, 0.0, 1.0, 3.0]),
        "skip_rate": np.array([0.5, 0.1, 0.5, 0.5]),
    }
    losses = {"skips": 0.1, "avg_watch_time_s": 0.2, "full_watches": 0.3, "skip_rate": 0.4}
    m = task_metrics(preds, labels, plays, losses)
    expected_names = {
        f"val_{stem}_{kind}"
        for stem in ("e_item_timespent_0to3", "e_avg_watch_time", "e_num_full_watch")
        for kind in ("MAE", "log1p_R2", "SpearmanCorr", "count", "loss")
    } | {
        "val_p_item_skip_ctr_7d_calibration",
        "val_p_item_skip_ctr_7d_SpearmanCorr",
        "val_p_item_skip_ctr_7d_loss",
        "val_loss",
    }
    assert set(m) == expected_names
    assert m["val_e_item_timespent_0to3_MAE"] == pytest.approx((0 + 0.5 + 1 + 1) / 4)
    assert m["val_e_avg_watch_time_MAE"] == pytest.approx(1.0)  # null row masked
    assert m["val_e_avg_watch_time_count"] == 3
    assert m["val_e_num_full_watch_log1p_R2"] == pytest.approx(1.0)
    # expected skips 2 + 1 + 4 = 7 vs actual 1 + 2 + 4 = 7
    assert m["val_p_item_skip_ctr_7d_calibration"] == pytest.approx(1.0)
    assert m["val_e_num_full_watch_loss"] == 0.3
    assert m["val_loss"] == pytest.approx(1.0)
    assert set(task_metrics(preds, labels, plays, losses, prefix="test")) == {
        "test" + name[3:] for name in expected_names
    }


def test_mean_spearman_averages_the_four_tasks() -> None:
    metrics = {
        "val_e_item_timespent_0to3_SpearmanCorr": 0.1,
        "val_e_avg_watch_time_SpearmanCorr": 0.2,
        "val_e_num_full_watch_SpearmanCorr": 0.3,
        "val_p_item_skip_ctr_7d_SpearmanCorr": 0.6,
        "val_loss": 99.0,
    }
    assert mean_spearman(metrics) == pytest.approx(0.3)


def test_spearman_gap_separates_a_better_predictor_and_ties_an_equal_one() -> None:
    rng = np.random.default_rng(0)
    true = rng.standard_normal(2000)
    good = true + 0.5 * rng.standard_normal(2000)
    poor = true + 2.0 * rng.standard_normal(2000)
    gap, low, high = spearman_gap(good, poor, true, resamples=300)
    assert gap == pytest.approx(spearman(good, true) - spearman(poor, true))
    assert 0 < low <= gap <= high  # clearly better: the interval excludes 0
    # The same predictor against itself is a tie on every resample.
    assert spearman_gap(good, good, true, resamples=50) == (0.0, 0.0, 0.0)
    # Two equally noisy predictors: the interval straddles 0.
    other = true + 0.5 * rng.standard_normal(2000)
    _, low, high = spearman_gap(good, other, true, resamples=300)
    assert low < 0 < high
    # Non-finite rows are dropped from both; a constant predictor has no Spearman.
    with_nan = good.copy()
    with_nan[:10] = np.nan
    assert np.isfinite(spearman_gap(with_nan, poor, true, resamples=20)[0])
    assert all(math.isnan(x) for x in spearman_gap(np.ones(2000), poor, true, resamples=20))
