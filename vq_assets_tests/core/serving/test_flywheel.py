import math

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.model import tasks
from vq_assets.core.serving.flywheel import (
    exclusions,
    flywheel_lift,
    percentile_within_day,
    quality_score,
    sampling_weights,
)

# hypothesis is not in the venv: seeded random property loops instead.
SEEDS = range(40)


def _random_day(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    n_creators = int(rng.integers(1, max(2, n)))
    creators = np.array([f"c{i}" for i in rng.integers(0, n_creators, n)])
    scores = rng.normal(0, float(rng.choice([0.1, 1.0, 5.0])), n)
    excluded = rng.random(n) < float(rng.choice([0.0, 0.1, 0.5]))
    if excluded.all():
        excluded[0] = False
    return dict(
        scores=scores,
        creators=creators,
        excluded=excluded,
        temperature=float(rng.choice([0.05, 0.5, 1.0, 3.0])),
        epsilon=float(rng.choice([0.0, 0.05, 0.3, 1.0])),
        cap=float(rng.choice([0.01, 0.05, 0.2, 1.0])),
    )


def _weights(day: dict):
    return sampling_weights(
        day["scores"],
        day["creators"],
        temperature=day["temperature"],
        epsilon=day["epsilon"],
        creator_cap=day["cap"],
        excluded=day["excluded"],
    )


def _creator_mass(w: np.ndarray, creators: np.ndarray) -> dict[str, float]:
    return {c: float(w[creators == c].sum()) for c in np.unique(creators)}


def _precap(day: dict) -> np.ndarray:
    """The softmax + floor mixture before the cap, over all videos (0 for excluded)."""
    elig = ~day["excluded"]
    x = day["scores"][elig] / day["temperature"]
    soft = np.exp(x - x.max())
    soft /= soft.sum()
    p = np.zeros(day["scores"].size)
    p[elig] = (1 - day["epsilon"]) * soft + day["epsilon"] / elig.sum()
    return p


def _iterative_cap(p: np.ndarray, creators: np.ndarray, cap: float) -> np.ndarray:
    """Reference water-filling, written the slow obvious way: cap, redistribute, repeat."""
    w = p.copy()
    capped: set[str] = set()
    for _ in range(10_000):
        mass = _creator_mass(w, creators)
        over = {c for c, m in mass.items() if m > cap * (1 + 1e-12)}
        if not over:
            return w
        for c in over:
            w[creators == c] *= cap / mass[c]
        capped |= over
        free = ~np.isin(creators, list(capped))
        w[free] *= (1 - cap * len(capped)) / w[free].sum()
    raise AssertionError("did not converge")


# --- sampling_weights ------------------------------------------------------------------------


def test_properties_on_random_days() -> None:
    for seed in SEEDS:
        day = _random_day(seed)
        w, rep = _weights(day)
        elig = ~day["excluded"]
        n_elig = int(elig.sum())
        creators_elig = np.unique(day["creators"][elig])
        assert abs(w.sum() - 1.0) <= 1e-12, seed
        assert (w[day["excluded"]] == 0.0).all(), seed
        assert (w >= 0).all()
        # cap: the requested one when feasible, else exactly 1 / n_creators (all at the cap)
        if creators_elig.size * day["cap"] >= 1:
            assert rep.cap_used == day["cap"] and not rep.cap_relaxed
        else:
            assert rep.cap_relaxed and rep.cap_used == pytest.approx(1 / creators_elig.size)
        mass = _creator_mass(w, day["creators"])
        assert max(mass.values()) <= rep.cap_used + 1e-12, seed
        # the floor: eps / n_eligible for an uncapped creator's video, eps*cap/n_eligible always
        pre = _precap(day)
        pre_mass = _creator_mass(pre, day["creators"])
        for i in np.nonzero(elig)[0]:
            c = day["creators"][i]
            assert w[i] >= day["epsilon"] * rep.cap_used / n_elig * (1 - 1e-9), seed
            if pre_mass[c] <= rep.cap_used:
                assert w[i] >= day["epsilon"] / n_elig * (1 - 1e-9), seed
        # the same fixed point as the naive iterate-until-stable water-filling
        np.testing.assert_allclose(
            w, _iterative_cap(pre, day["creators"], rep.cap_used), rtol=1e-9, atol=1e-15
        )
        # report
        assert rep.n_videos == day["scores"].size
        assert rep.n_excluded == int(day["excluded"].sum())
        assert rep.n_creators == creators_elig.size
        at_cap = sum(1 for m in mass.values() if m >= rep.cap_used * (1 - 1e-9))
        assert rep.n_creators_capped == at_cap, seed
        if rep.cap_relaxed:
            assert at_cap == creators_elig.size
        # every creator above the cap before capping is at the cap after
        assert all(
            mass[c] >= rep.cap_used * (1 - 1e-9) for c, m in pre_mass.items() if m > rep.cap_used
        ), seed
        assert rep.max_weight == w.max()
        assert rep.effective_sample_size == pytest.approx(1 / np.sum(w**2))
        assert 1.0 - 1e-9 <= rep.effective_sample_size <= n_elig * (1 + 1e-9)


def test_within_creator_order_is_kept_even_when_capped() -> None:
    for seed in SEEDS:
        day = _random_day(seed)
        w, _ = _weights(day)
        elig = ~day["excluded"]
        for c in np.unique(day["creators"][elig]):
            idx = np.nonzero(elig & (day["creators"] == c))[0]
            order = np.argsort(day["scores"][idx], kind="stable")
            assert (np.diff(w[idx][order]) >= -1e-15).all(), seed


def test_monotone_across_creators_when_no_cap_binds() -> None:
    rng = np.random.default_rng(7)
    scores = rng.normal(size=200)
    creators = np.array([f"c{i}" for i in range(200)])
    w, rep = sampling_weights(scores, creators, temperature=0.7, epsilon=0.1, creator_cap=1.0)
    assert rep.n_creators_capped == 0
    order = np.argsort(scores)
    assert (np.diff(w[order]) >= 0).all()
    # uncapped, the weights are exactly the softmax + floor mixture
    soft = np.exp(scores / 0.7 - (scores / 0.7).max())
    np.testing.assert_allclose(w, 0.9 * soft / soft.sum() + 0.1 / 200, rtol=1e-12)


def test_infinite_temperature_is_uniform_over_eligible() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 10, 50)
    creators = np.array([f"c{i}" for i in range(50)])
    excluded = np.zeros(50, dtype=bool)
    excluded[[3, 9]] = True
    for t in (math.inf, 1e12):
        w, rep = sampling_weights(scores, creators, temperature=t, epsilon=0.0, excluded=excluded)
        np.testing.assert_allclose(w[~excluded], 1 / 48, rtol=1e-9)
        assert rep.effective_sample_size == pytest.approx(48)
        assert rep.entropy == pytest.approx(math.log(48))


def test_epsilon_one_is_uniform() -> None:
    creators = np.array([f"c{i}" for i in range(30)])
    w, _ = sampling_weights(np.arange(30.0), creators, temperature=0.01, epsilon=1.0)
    np.testing.assert_allclose(w, 1 / 30, rtol=1e-12)


def test_small_temperature_concentrates_on_top_subject_to_cap() -> None:
    scores = np.array([0.0, 1.0, 5.0, 2.0, 4.9])
    creators = np.array(["a", "b", "c", "d", "e"])
    w, rep = sampling_weights(scores, creators, temperature=1e-3, epsilon=0.0, creator_cap=1.0)
    assert w[2] == pytest.approx(1.0) and rep.max_weight == pytest.approx(1.0)
    assert rep.effective_sample_size == pytest.approx(1.0)
    # with a cap the top creator sits at the cap, the top video is still the heaviest and the
    # rest (which had only the floor) share the remainder equally
    w, rep = sampling_weights(scores, creators, temperature=1e-3, epsilon=0.05, creator_cap=0.3)
    assert w.argmax() == 2 and w[2] == pytest.approx(0.3)
    assert rep.n_creators_capped == 1
    np.testing.assert_allclose(np.delete(w, 2), 0.7 / 4)
    # the top creator's other videos share its capped mass in proportion
    creators = np.array(["a", "b", "c", "d", "c"])
    w, _ = sampling_weights(scores, creators, temperature=1e-3, epsilon=0.05, creator_cap=0.3)
    assert w[2] + w[4] == pytest.approx(0.3) and w[2] > w[4] > 0


def test_cap_by_hand() -> None:
    # one creator with 3 of 6 equal videos: uncapped it would hold 0.5
    creators = np.array(["a", "a", "a", "b", "c", "d"])
    w, rep = sampling_weights(np.zeros(6), creators, creator_cap=0.3)
    np.testing.assert_allclose(w, [0.1] * 3 + [0.7 / 3] * 3)
    assert rep.n_creators_capped == 1 and rep.cap_used == 0.3 and not rep.cap_relaxed
    # 4 creators at cap 1/4: feasible, but only with every creator exactly at the cap
    w, rep = sampling_weights(np.zeros(6), creators, creator_cap=0.25)
    np.testing.assert_allclose(w, [1 / 12] * 3 + [0.25] * 3)
    assert rep.n_creators_capped == 4 and not rep.cap_relaxed


def test_infeasible_cap_is_relaxed_and_reported() -> None:
    creators = np.array(["a", "a", "a", "b", "c", "x"])
    excluded = np.array([False] * 5 + [True])  # x is excluded: 3 eligible creators
    w, rep = sampling_weights(np.arange(6.0), creators, creator_cap=0.05, excluded=excluded)
    assert rep.cap_relaxed and rep.cap_used == pytest.approx(1 / 3) and rep.n_creators == 3
    mass = _creator_mass(w, creators)
    assert mass["a"] == pytest.approx(1 / 3) and mass["b"] == pytest.approx(1 / 3)
    assert mass["x"] == 0.0
    w, rep = sampling_weights(np.zeros(1), ["only"])
    assert w.tolist() == [1.0] and rep.cap_used == 1.0


def test_all_excluded_raises() -> None:
    with pytest.raises(ValueError, match="all 3 videos are excluded"):
        sampling_weights(np.zeros(3), ["a", "b", "c"], excluded=np.ones(3, dtype=bool))


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        sampling_weights(np.zeros(2), ["a", "b"], temperature=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        sampling_weights(np.zeros(2), ["a", "b"], epsilon=1.5)
    with pytest.raises(ValueError, match="creator_cap"):
        sampling_weights(np.zeros(2), ["a", "b"], creator_cap=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        sampling_weights(np.array([0.0, np.nan]), ["a", "b"])
    with pytest.raises(ValueError, match="null creator_id"):
        sampling_weights(np.zeros(2), ["a", None])
    with pytest.raises(ValueError, match="creator ids"):
        sampling_weights(np.zeros(3), ["a", "b"])
    # eps = 0 and a softmax that underflows for all but one creator: the cap can't be met
    with pytest.raises(ValueError, match="underflow"):
        sampling_weights(
            np.array([0.0, 1000.0, 0.0]),
            ["a", "b", "c"],
            temperature=1.0,
            epsilon=0.0,
            creator_cap=0.5,
        )
    # an excluded video's score may be NaN (it is never used)
    w, _ = sampling_weights(np.array([0.0, np.nan]), ["a", "b"], excluded=np.array([0, 1]))
    assert w.tolist() == [1.0, 0.0]


def test_accepts_arrow_creator_ids() -> None:
    creators = pa.chunked_array([["a", "a"], ["b", "c"]])
    w, rep = sampling_weights(np.zeros(4), creators, creator_cap=0.4)
    assert rep.n_creators == 3
    np.testing.assert_allclose(w, [0.2, 0.2, 0.3, 0.3])


# --- quality_score and percentiles ------------------------------------------------------------


def _preds(skip_rate, watch, full, skips) -> dict[str, np.ndarray]:
    """The four viewer-behaviour predictions; every other catalogue column is null, as for a
    model without those heads."""
    given = {
        "pred_skip_rate": np.asarray(skip_rate, dtype=float),
        "pred_avg_watch_time_s": np.asarray(watch, dtype=float),
        "pred_full_watches": np.asarray(full, dtype=float),
        "pred_skips": np.asarray(skips, dtype=float),
    }
    n = len(given["pred_skips"])
    return {t.prediction: given.get(t.prediction, np.full(n, np.nan)) for t in tasks.catalogue()}


def test_quality_score_renormalises_over_the_tasks_the_model_has() -> None:
    preds = _preds([0.2, 0.4, 0.3], [5.0] * 3, [3] * 3, [7] * 3)
    zero = dict.fromkeys(tasks.names(), 0.0)
    # plays has no head (its column is null): its weight's mass moves to the tasks present.
    with_missing = quality_score(preds, {**zero, "skip_rate": -1.0, "plays": 1.0})
    np.testing.assert_allclose(with_missing, quality_score(preds, {**zero, "skip_rate": -2.0}))
    # Once plays is predicted, it counts with its own weight and nothing is rescaled.
    preds["pred_plays"] = np.array([10.0, 10.0, 10.0])
    np.testing.assert_allclose(
        quality_score(preds, {**zero, "skip_rate": -1.0, "plays": 1.0}),
        quality_score(preds, {**zero, "skip_rate": -1.0}),
    )


def test_quality_score_ranks_good_above_bad() -> None:
    # video 0: low skip rate, long watch time; video 1: the opposite; 2: in between
    preds = _preds([0.1, 0.6, 0.3], [20.0, 2.0, 8.0], [50, 1, 10], [5, 60, 20])
    s = quality_score(preds)
    assert s[0] > s[2] > s[1]
    p = percentile_within_day(s)
    assert p.tolist() == [1.0, 0.0, 0.5]


def test_quality_score_by_hand_and_constant_columns() -> None:
    # only skip rate varies; every other column is constant and contributes 0
    preds = _preds([0.2, 0.4], [5.0, 5.0], [3, 3], [7, 7])
    s = quality_score(preds, {"skip_rate": -2.0})
    np.testing.assert_allclose(s, [2.0, -2.0])  # z = [-1, 1]
    # log1p, then z-score: expm1 of [0, 1, 2] -> z of [0, 1, 2]
    watch = np.expm1([0.0, 1.0, 2.0])
    preds = _preds([0.3] * 3, watch, [1] * 3, [1] * 3)
    s = quality_score(
        preds, {"avg_watch_time_s": 1.0, "skip_rate": 0.0, "full_watches": 0.0, "skips": 0.0}
    )
    np.testing.assert_allclose(s, np.array([-1.0, 0.0, 1.0]) * math.sqrt(1.5))
    # a constant day, a day of one, an empty day
    assert quality_score(_preds([0.3] * 4, [5] * 4, [1] * 4, [2] * 4)).tolist() == [0.0] * 4
    assert quality_score(_preds([0.3], [5], [1], [2])).tolist() == [0.0]
    assert quality_score(_preds([], [], [], [])).size == 0


def test_quality_score_rejects_weights_for_unknown_tasks() -> None:
    with pytest.raises(ValueError, match="unknown tasks \\['likes'\\]"):
        quality_score(_preds([0.1], [1.0], [1], [1]), {"likes": 1.0})


def test_quality_score_is_finite_with_a_missing_prediction() -> None:
    preds = _preds([0.1, np.nan, 0.5], [10.0, 10.0, 1.0], [5, 5, 1], [1, 1, 9])
    s = quality_score(preds)
    assert np.isfinite(s).all() and s[0] > s[2]


def test_quality_score_missing_column_raises() -> None:
    preds = _preds([0.1], [1.0], [1], [1])
    del preds["pred_skips"]
    with pytest.raises(KeyError, match="pred_skips"):
        quality_score(preds)


def test_percentile_properties() -> None:
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        s = np.round(rng.normal(size=int(rng.integers(2, 200))), 1)  # rounding makes ties
        p = percentile_within_day(s)
        assert ((p >= 0) & (p <= 1)).all()
        n_min = int((s == s.min()).sum())
        assert p.min() == pytest.approx((n_min - 1) / 2 / (s.size - 1))  # avg rank of the ties
        order = np.argsort(s)
        assert (np.diff(p[order]) >= 0).all()
        assert (p[s == s.max()] == p.max()).all()  # ties share one percentile
    assert percentile_within_day(np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [0, 0.5, 0.5, 1]
    assert percentile_within_day(np.array([4.2])).tolist() == [0.5]
    assert percentile_within_day(np.array([1.0, 1.0, 1.0])).tolist() == [0.5] * 3
    p = percentile_within_day(np.array([np.nan, 1.0, 2.0]))
    assert math.isnan(p[0]) and p[1:].tolist() == [0.0, 1.0]


# --- exclusions -------------------------------------------------------------------------------


def test_exclusions() -> None:
    ids = ["v1", "v2", "v3", "v4"]
    flags = np.array([True, None, False, None], dtype=object)  # null = not flagged
    assert exclusions(ids, flags, ["v4", "not-a-video"]).tolist() == [True, False, False, True]
    assert exclusions(ids, None, []).tolist() == [False] * 4
    assert exclusions(pa.array(ids), pa.array([None, True, None, None]), set()).tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert exclusions(np.array(ids), np.array([np.nan, 1.0, 0.0, np.nan]), ["v1"]).tolist() == [
        True,
        True,
        False,
        False,
    ]
    with pytest.raises(ValueError, match="3 flags for 4 videos"):
        exclusions(ids, np.array([True, False, False]), [])


# --- flywheel_lift ----------------------------------------------------------------------------


def test_flywheel_lift_by_hand() -> None:
    w = np.array([0.4, 0.3, 0.2, 0.1, 0.0])
    skip = np.array([0.1, 0.2, 0.5, np.nan, 0.9])  # video 3: no plays; video 4: excluded
    watch = np.array([10.0, 8.0, 2.0, np.nan, 1.0])
    plays = np.array([100, 50, 10, 0, 30])
    out = flywheel_lift(w, skip, watch, plays)
    assert out["eligible_videos"] == 4 and out["videos_with_labels"] == 3
    assert out["weight_coverage"] == pytest.approx(0.9)
    # weights renormalised over the 3 labelled videos: 4/9, 3/9, 2/9
    assert out["skip_rate_weighted"] == pytest.approx((0.4 + 0.6 + 1.0) / 9)  # 2/9
    assert out["skip_rate_uniform"] == pytest.approx(0.8 / 3)
    assert out["skip_rate_lift"] == pytest.approx((2 / 9) / (0.8 / 3) - 1)  # -1/6
    assert out["avg_watch_time_s_weighted"] == pytest.approx((40 + 24 + 4) / 9)
    assert out["avg_watch_time_s_uniform"] == pytest.approx(20 / 3)
    assert out["avg_watch_time_s_lift"] == pytest.approx((68 / 9) / (20 / 3) - 1)
    # uniform weights: no lift
    u = flywheel_lift(np.full(4, 0.25), skip[:4], watch[:4], plays[:4])
    assert u["skip_rate_lift"] == pytest.approx(0.0) and u["weight_coverage"] == 0.75


def test_flywheel_lift_without_labels_is_nan() -> None:
    out = flywheel_lift(np.array([0.5, 0.5]), np.full(2, np.nan), np.full(2, np.nan), [0, 0])
    assert out["videos_with_labels"] == 0
    assert math.isnan(out["skip_rate_lift"]) and math.isnan(out["avg_watch_time_s_weighted"])
    # a day whose labelled videos never skip: the relative lift is undefined
    out = flywheel_lift(np.array([0.5, 0.5]), np.zeros(2), np.ones(2), [3, 4])
    assert out["skip_rate_uniform"] == 0.0 and math.isnan(out["skip_rate_lift"])


def test_flywheel_lift_explicit_exclusion_keeps_zero_weight_eligible() -> None:
    # with eps = 0 an eligible video can have weight 0; uniform still samples it
    w = np.array([1.0, 0.0])
    out = flywheel_lift(
        w, np.array([0.1, 0.5]), np.array([5.0, 5.0]), [10, 10], excluded=np.array([False, False])
    )
    assert out["skip_rate_uniform"] == pytest.approx(0.3)
    assert out["skip_rate_lift"] == pytest.approx(0.1 / 0.3 - 1)
