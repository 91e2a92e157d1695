""" "The prior is worth N impressions": early realised skip rates against vq's prediction."""

import datetime as dt

import numpy as np
import pyarrow as pa

from vq_assets.core.evaluation.prior_worth import early_skip_rates, prior_worth

DAY = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")


def _videos(n: int, skip_rate=None, pred=None) -> pa.Table:
    return pa.table(
        {
            "video_id": [f"v{i}" for i in range(n)],
            "created_at": pa.array([DAY] * n, TS),
            "skip_rate": np.full(n, np.nan) if skip_rate is None else skip_rate,
            "pred_skip_rate": np.full(n, np.nan) if pred is None else pred,
        }
    )


def _events(video, hours, watch) -> pa.Table:
    return pa.table(
        {
            "video_id": video,
            "event_ts": pa.array([DAY + dt.timedelta(hours=float(h)) for h in hours], TS),
            "watch_time_s": np.asarray(watch, float),
        }
    )


def test_early_rates_follow_event_time_and_the_window() -> None:
    events = _events(
        ["v0", "v1", "v0", "v0", "v0", "v1", "v0"],
        [5, 1, 1, 3, 200, -1, 2],  # v0 in time order: 1h skip, 2h watch, 3h skip, 5h watch
        [9.0, 1.0, 1.0, 1.0, 1.0, 9.0, 8.0],  # 200h is after the window, -1h before creation
    )
    rates = early_skip_rates(events, _videos(2), play_counts=(1, 2, 4, 5))
    assert rates[1].tolist() == [1.0, 1.0]
    assert rates[2][0] == 0.5 and np.isnan(rates[2][1])  # v1 has one play in its window
    assert rates[4][0] == 0.5
    assert np.isnan(rates[5]).all()


def test_the_prior_is_worth_the_plays_whose_noise_matches_the_models() -> None:
    rng = np.random.default_rng(0)
    n, plays = 3000, 200
    p = rng.beta(2, 5, n)
    skips = rng.random((n, plays)) < p[:, None]
    label = skips.mean(1)
    # vq's prediction: the truth plus noise about as large as the binomial noise of ~10 plays
    pred = p + rng.normal(0, np.sqrt(0.2 * 0.8 / 10), n)
    hours = np.tile(np.linspace(0, 160, plays), n)
    events = _events(
        np.repeat([f"v{i}" for i in range(n)], plays), hours, np.where(skips.ravel(), 1.0, 9.0)
    )
    result = prior_worth(events, _videos(n, label, pred), resamples=50)
    rows = result.table.to_pylist()
    assert [r["n_plays"] for r in rows] == [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    assert all(r["videos"] == n for r in rows)
    early = [r["early_spearman"] for r in rows]
    assert all(b > a for a, b in zip(early, early[1:], strict=False))  # more plays, better
    assert 5 <= result.worth <= 21
    first = next(r for r in rows if r["n_plays"] == result.worth)
    assert first["early_spearman"] >= first["vq_spearman"]
    before = rows[[r["n_plays"] for r in rows].index(result.worth) - 1]
    assert before["gap"] < 0 and before["gap_ci_low"] < before["gap"] < before["gap_ci_high"]
    assert result.summary() == f"the prior is worth {result.worth} impressions"


def test_a_perfect_prior_is_worth_more_than_every_n() -> None:
    rng = np.random.default_rng(1)
    n, plays = 200, 20
    skips = rng.random((n, plays)) < rng.beta(2, 5, n)[:, None]
    label = skips.mean(1)
    events = _events(
        np.repeat([f"v{i}" for i in range(n)], plays),
        np.tile(np.arange(plays), n),
        np.where(skips.ravel(), 1.0, 9.0),
    )
    result = prior_worth(events, _videos(n, label, label + 1.0), (1, 3, 34), resamples=0)
    assert result.worth is None
    assert result.table["videos"].to_pylist() == [n, n, 0]  # nobody reaches 34 plays
    assert result.summary() == "the prior is worth more than 34 impressions"
