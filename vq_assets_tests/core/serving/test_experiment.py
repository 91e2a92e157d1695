"""The flywheel A/B: per-arm outcomes, user-level intervals, guardrails, the user split."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from vq_assets.core.serving.experiment import (
    INTERVAL,
    Difference,
    Guardrails,
    assign_arm,
    check_guardrails,
    evaluate_experiment,
    gini,
)

DAY = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")


def _videos(n: int, creators: int, flagged: list[bool] | None = None) -> pa.Table:
    cols = {
        "video_id": [f"v{i}" for i in range(n)],
        "creator_id": [f"c{i % creators}" for i in range(n)],
        "created_at": pa.array([DAY + dt.timedelta(hours=1)] * n, TS),
        "duration_s": np.full(n, 10.0),
    }
    if flagged is not None:
        cols["flagged"] = flagged
    return pa.table(cols)


def _events(rows: list[tuple], liked=None) -> pa.Table:
    """rows: (user, video, hours after DAY, watch_time_s, arm)."""
    user, video, hours, watch, arm = zip(*rows, strict=True)
    cols = {
        "user_id": list(user),
        "video_id": list(video),
        "event_ts": pa.array([DAY + dt.timedelta(hours=h) for h in hours], TS),
        "watch_time_s": np.array(watch, float),
        "arm": list(arm),
    }
    if liked is not None:
        cols["liked"] = pa.array(liked, pa.bool_())
    return pa.table(cols)


def _by_metric(result) -> dict[str, Difference]:
    return {d.metric: d for d in result.differences}


def test_each_arms_outcomes_by_hand() -> None:
    videos = _videos(4, creators=2, flagged=[False, False, False, True])
    events = _events(
        [
            ("a", "v0", 2, 1.0, "control"),  # skip
            ("a", "v0", 3, 10.0, "control"),  # full watch
            ("b", "v1", 2, 5.0, "control"),
            ("b", "v9", 2, 5.0, "control"),  # not the day's video: ignored
            ("b", "v1", 200, 5.0, "control"),  # after the 7-day window: ignored
            ("x", "v2", 2, 12.0, "treatment"),
            ("x", "v3", 2, 2.0, "treatment"),  # flagged video, a skip
        ],
        liked=[True, None, False, False, False, True, None],
    )
    r = evaluate_experiment(events, videos, discoverable_plays=2, resamples=50)
    m = _by_metric(r)
    assert r.users == {"control": 2, "treatment": 1}
    assert r.impressions == {"control": 3, "treatment": 2}
    assert m["watch_time_per_impression"].control == pytest.approx(16 / 3)
    assert m["watch_time_per_impression"].treatment == pytest.approx(7.0)
    assert m["skip_rate"].control == pytest.approx(1 / 3)
    assert m["full_watch_rate"].treatment == pytest.approx(0.5)
    assert m["engagement_rate"].control == pytest.approx(1 / 3)
    assert m["flagged_exposure"].treatment == pytest.approx(0.5)
    # control's share of users is 2/3: a video needs round(2 * 2/3) = 1 play there... v0, v1
    assert m["discoverable_corpus"].control == pytest.approx(2 / 4)
    # ...and round(2 * 1/3) = 1 in treatment: v2, v3
    assert m["discoverable_corpus"].treatment == pytest.approx(2 / 4)
    # creators: c0 has v0, v2; c1 has v1, v3. Both arms reach both creators.
    assert m["creator_coverage"].control == m["creator_coverage"].treatment == 1.0
    # control's exposure [2, 1, 0, 0]
    assert m["exposure_gini"].control == pytest.approx(gini(np.array([2.0, 1.0, 0.0, 0.0]))[0])
    assert m["skip_rate"].difference == pytest.approx(0.5 - 1 / 3)
    assert r.table().num_rows == 8 and set(r.table()["interval"].to_pylist()) == {INTERVAL}


def test_engagement_is_unknown_without_flags_and_gini_by_hand() -> None:
    r = evaluate_experiment(
        _events([("a", "v0", 2, 1.0, "control"), ("b", "v1", 2, 1.0, "treatment")]),
        _videos(2, 2),
        resamples=10,
    )
    assert np.isnan(_by_metric(r)["engagement_rate"].control)
    assert gini(np.array([1.0, 1.0, 1.0]))[0] == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 5.0]))[0] == pytest.approx(2 / 3)
    # zeros passed as a count are the same as zeros in the row
    np.testing.assert_allclose(
        gini(np.array([[3.0, 1.0]]), zeros=2), gini(np.array([[0, 0, 3, 1.0]]))
    )
    assert np.isnan(gini(np.zeros(3))[0])


def _world(seed: int, users: int, videos: int, effect: float) -> tuple[pa.Table, pa.Table]:
    """Users with their own skip propensity (so their events are correlated); treatment lowers
    the skip probability by `effect`."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i}" for i in range(users)])
    arm = assign_arm(ids, 0.5, salt="test")
    per_user = rng.poisson(8, users) + 1
    u = np.repeat(np.arange(users), per_user)
    n = u.size
    p_skip = np.clip(rng.beta(2, 5, users)[u] - effect * (arm[u] == "treatment"), 0, 1)
    watch = np.where(rng.random(n) < p_skip, 1.0, rng.uniform(3, 20, n))
    events = pa.table(
        {
            "user_id": ids[u],
            "video_id": pa.array([f"v{i}" for i in rng.integers(0, videos, n)]),
            "event_ts": pa.array([DAY + dt.timedelta(hours=2)] * n, TS),
            "watch_time_s": watch,
            "arm": arm[u],
        }
    )
    return events, _videos(videos, creators=videos // 3)


def test_intervals_cover_no_effect_and_find_a_real_one() -> None:
    events, videos = _world(0, 4000, 600, effect=0.0)
    aa = _by_metric(evaluate_experiment(events, videos, resamples=300, seed=1))
    for d in aa.values():
        if np.isfinite(d.difference):
            assert d.ci_low <= 0.0 <= d.ci_high, d
    events, videos = _world(0, 4000, 600, effect=0.05)
    ab = _by_metric(evaluate_experiment(events, videos, resamples=300, seed=1))
    assert ab["skip_rate"].ci_high < 0.0  # treatment skips less, and the interval says so
    # user-level: an interval from correlated users is wider than an event-level binomial one
    skip = ab["skip_rate"]
    n = events.num_rows / 2
    binomial = 2 * 1.96 * np.sqrt(2 * skip.control * (1 - skip.control) / n)
    assert skip.ci_high - skip.ci_low > 1.2 * binomial


def test_the_bootstrap_is_seeded() -> None:
    events, videos = _world(3, 500, 100, effect=0.0)

    def intervals(seed: int) -> np.ndarray:
        r = evaluate_experiment(events, videos, resamples=40, seed=seed)
        return np.array([(d.ci_low, d.ci_high) for d in r.differences])

    np.testing.assert_array_equal(intervals(5), intervals(5))  # NaN == NaN here
    assert not np.allclose(intervals(5), intervals(6), equal_nan=True)


def test_bad_arms_are_refused() -> None:
    videos = _videos(1, 1)
    with pytest.raises(ValueError, match="arm must be one of"):
        evaluate_experiment(_events([("a", "v0", 2, 1.0, "B")]), videos)
    both = _events([("a", "v0", 2, 1.0, "control"), ("a", "v0", 3, 1.0, "treatment")])
    with pytest.raises(ValueError, match="1 users appear in both arms, e.g. \\['a'\\]"):
        evaluate_experiment(both, videos)


def _diff(metric: str, control: float, treatment: float) -> Difference:
    d = treatment - control
    return Difference(metric, control, treatment, d, d - 0.01, d + 0.01)


def _guard(**changes) -> tuple[dict[str, bool], dict[str, str]]:
    base = {
        "skip_rate": (0.30, 0.30),
        "exposure_gini": (0.50, 0.50),
        "creator_coverage": (0.80, 0.80),
        "flagged_exposure": (0.0, 0.0),
        "discoverable_corpus": (0.6, 0.6),
    }
    base |= changes
    diffs = {k: _diff(k, *v) for k, v in base.items()}
    results = check_guardrails(diffs, Guardrails(0.005, 0.02, 0.02, 0.0))
    return {g.name: g.passed for g in results}, {g.name: g.reason for g in results}


def test_guardrails_fail_only_beyond_their_tolerance() -> None:
    passed, _ = _guard()
    assert all(passed.values())
    passed, reason = _guard(skip_rate=(0.30, 0.31))
    assert not passed["skip_rate"] and "REGRESSED" in reason["skip_rate"]
    assert "may rise by at most 0.005" in reason["skip_rate"]
    assert _guard(skip_rate=(0.30, 0.304))[0]["skip_rate"]
    assert _guard(skip_rate=(0.30, 0.10))[0]["skip_rate"]  # improvements always pass
    assert not _guard(exposure_gini=(0.5, 0.53))[0]["exposure_concentration"]
    assert not _guard(creator_coverage=(0.8, 0.77))[0]["creator_coverage"]
    assert _guard(creator_coverage=(0.8, 0.79))[0]["creator_coverage"]
    # flagged exposure: none in treatment passes; any rise fails at tolerance 0
    assert _guard(flagged_exposure=(0.01, 0.0))[0]["flagged_exposure"]
    assert not _guard(flagged_exposure=(0.0, 0.001))[0]["flagged_exposure"]
    assert not _guard(discoverable_corpus=(0.6, 0.57))[0]["discoverable_corpus"]
    passed, reason = _guard(skip_rate=(float("nan"), 0.3))
    assert not passed["skip_rate"] and "cannot be measured" in reason["skip_rate"]


def test_arm_assignment_is_a_stable_hash_of_the_user() -> None:
    users = [f"user-{i}" for i in range(20000)]
    arms = assign_arm(users, 0.3, salt="flywheel-v2")
    assert set(arms) == {"control", "treatment"}
    assert abs((arms == "treatment").mean() - 0.3) < 0.015
    assert assign_arm(users[::-1], 0.3, salt="flywheel-v2").tolist() == arms.tolist()[::-1]
    other = assign_arm(users, 0.3, salt="another-experiment")
    assert 0.3 < (other != arms).mean() < 0.6  # another salt splits independently
    # raising the share only moves users from control to treatment
    more = assign_arm(users, 0.5, salt="flywheel-v2")
    assert not ((arms == "treatment") & (more == "control")).any()
    with pytest.raises(ValueError, match="treatment_share"):
        assign_arm(users, 1.5, salt="x")
