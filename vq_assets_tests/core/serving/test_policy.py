"""The model's spread of the quality score, Thompson sampling, and policies given as weights."""

import numpy as np
import pytest

from vq_assets.core.model import tasks
from vq_assets.core.serving.flywheel import (
    day_seed,
    policy_scores,
    quality_score,
    quality_score_sd,
    sampling_weights,
    validate_policy_weights,
)

ONLY_SKIP_RATE = {**dict.fromkeys(tasks.names(), 0.0), "skip_rate": -1.0}


def _preds(skip_rate) -> dict[str, np.ndarray]:
    """Every catalogue column; only the skip rate is predicted (the rest null, no head)."""
    skip_rate = np.asarray(skip_rate, dtype=float)
    out = {t.prediction: np.full(skip_rate.size, np.nan) for t in tasks.catalogue()}
    out["pred_skip_rate"] = skip_rate
    return out


def test_spread_is_the_sd_of_the_members_scores_on_the_days_scale() -> None:
    mean = np.array([0.1, 0.2, 0.3, 0.4])
    # video 0: members disagree by +-0.05; others: all members agree
    members = np.repeat(mean[:, None], 3, axis=1)
    members[0] = [0.05, 0.10, 0.15]
    preds = _preds(mean)
    sd = quality_score_sd(preds, {"pred_skip_rate": members}, ONLY_SKIP_RATE)
    # score = -(x - mean_day) / std_day: a member's score moves by -dx / std_day
    expected = np.std([0.05, 0.10, 0.15], ddof=1) / mean.std()
    np.testing.assert_allclose(sd, [expected, 0.0, 0.0, 0.0], atol=1e-12)
    # the members' mean score is the ensemble's score (mean on the same affine scale)
    member_scores = -(members - mean.mean()) / mean.std()
    np.testing.assert_allclose(member_scores.mean(1), quality_score(preds, ONLY_SKIP_RATE))


def test_spread_ignores_tasks_without_weight_and_is_null_for_one_member() -> None:
    preds = _preds([0.1, 0.5])
    preds["pred_plays"] = np.array([10.0, 100.0])
    noisy = {"pred_plays": np.array([[1.0, 1000.0], [5.0, 500.0]])}  # plays weighs 0 here
    agree = {"pred_skip_rate": np.array([[0.1, 0.1], [0.5, 0.5]])}
    assert quality_score_sd(preds, {**noisy, **agree}, ONLY_SKIP_RATE).tolist() == [0.0, 0.0]
    single = quality_score_sd(preds, {"pred_skip_rate": np.array([[0.1], [0.5]])})
    assert np.isnan(single).all()
    with pytest.raises(ValueError, match="members"):
        quality_score_sd(preds, {"pred_skip_rate": np.array([0.1, 0.5])})


def test_exp_policy_uses_the_scores_as_they_are() -> None:
    s = np.array([0.3, -1.0, 2.0])
    drawn, report = policy_scores("exp", s, None, day_seed("2026-01-05"), 0.5)
    assert drawn.tolist() == s.tolist() and report == {"policy": "exp"}
    with pytest.raises(ValueError, match="unknown flywheel policy 'greedy'"):
        policy_scores("greedy", s, None, day_seed("2026-01-05"), 0.5)


def test_thompson_reruns_of_a_day_draw_the_same_and_other_days_differ() -> None:
    s, sd = np.zeros(50), np.ones(50)
    a, _ = policy_scores("thompson", s, sd, day_seed("2026-01-05", 7), 0.5)
    b, _ = policy_scores("thompson", s, sd, day_seed("2026-01-05", 7), 0.5)
    c, _ = policy_scores("thompson", s, sd, day_seed("2026-01-06", 7), 0.5)
    d, _ = policy_scores("thompson", s, sd, day_seed("2026-01-05", 8), 0.5)
    assert a.tolist() == b.tolist()
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_thompson_explores_uncertain_videos_and_certain_ones_keep_their_score() -> None:
    # 2000 certain average videos and 2000 uncertain ones with a lower mean score
    n = 2000
    s = np.concatenate([np.zeros(n), np.full(n, -0.5)])
    sd = np.concatenate([np.zeros(n), np.full(n, 2.0)])
    drawn, report = policy_scores("thompson", s, sd, day_seed("2026-02-01"), 0.5)
    assert drawn[:n].tolist() == [0.0] * n
    assert report["videos_with_fallback_sd"] == 0
    creators = np.arange(2 * n).astype(str)
    w_exp, _ = sampling_weights(s, creators, temperature=0.5, epsilon=0.0, creator_cap=1.0)
    w_ts, _ = sampling_weights(drawn, creators, temperature=0.5, epsilon=0.0, creator_cap=1.0)
    # exp ranks the uncertain half below; Thompson gives it more mass, spread over its top draws
    assert w_exp[n:].sum() < 0.5 < w_ts[n:].sum()
    np.testing.assert_allclose(w_ts.sum(), 1.0)


def test_thompson_falls_back_to_a_constant_sd_and_says_so() -> None:
    s = np.zeros(1000)
    sd = np.full(1000, np.nan)
    sd[:10] = 0.0
    drawn, report = policy_scores("thompson", s, sd, day_seed("2026-01-05"), 0.5)
    assert report["videos_with_fallback_sd"] == 990 and report["fallback_sd"] == 0.5
    assert drawn[:10].tolist() == [0.0] * 10
    assert 0.45 < drawn[10:].std() < 0.55
    _, none = policy_scores("thompson", s, None, day_seed("2026-01-05"), 0.5)
    assert none["videos_with_fallback_sd"] == 1000
    with pytest.raises(ValueError, match="negative"):
        policy_scores("thompson", s, np.full(1000, -1.0), day_seed("2026-01-05"), 0.5)


DAY = ["a", "b", "c", "d"]


def test_a_policy_table_that_is_a_distribution_over_the_day_is_accepted() -> None:
    w = validate_policy_weights(["a", "c", "d"], [0.5, 0.25, 0.25], DAY)
    assert w.dtype == np.float64 and w.tolist() == [0.5, 0.25, 0.25]
    validate_policy_weights(DAY, [0.25, 0.25, 0.25, 0.25 + 5e-7], DAY)  # within 1e-6


@pytest.mark.parametrize(
    ("ids", "weights", "reason"),
    [
        (["a", "b"], [0.5, 0.6], "sum to 1.1"),
        (["a", "b"], [1.5, -0.5], "negative"),
        (["a", "b"], [np.nan, 1.0], "NaN"),
        (["a", "b"], [np.inf, 1.0], "infinite"),
        (["a", "a"], [0.5, 0.5], "duplicate video ids \\['a'\\]"),
        (["a", "zz"], [0.5, 0.5], "not the day's videos, e.g. \\['zz'\\]"),
        (["a", "b"], [1.0], "1 weights for 2 video ids"),
    ],
)
def test_a_policy_that_is_not_a_distribution_is_refused_with_the_reason(
    ids, weights, reason
) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_policy_weights(ids, weights, DAY)
