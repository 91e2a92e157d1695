"""A learnable synthetic stand-in for the training set (smoke tests, benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.popularity import PopularityScale
from vq_assets.core.model.settings import TrainSettings


def make_synthetic(
    n: int,
    seed: int = 0,
    dense_dims: Mapping[str, int] | None = None,
    cat_cardinalities: Mapping[str, int] | None = None,
) -> QualityDataset:
    """A learnable stand-in for the training set: labels are drawn from two latent scores
    (popularity, skippiness) that depend linearly on every feature group, plus a product of the
    first two dense groups (a pairwise interaction), with Poisson/binomial label noise."""
    dense_dims = dict(dense_dims or {"image_emb": 32, "text_emb": 32, "creator": 8})
    cat_cardinalities = dict(
        cat_cardinalities or {"language": 12, "duration_bucket": 8, "hour": 24, "weekday": 7}
    )
    rng = np.random.default_rng(seed)
    features: dict[str, np.ndarray] = {}
    latent = np.zeros((n, 2))
    for name, dim in dense_dims.items():
        x = rng.standard_normal((n, dim))
        features[name] = x.astype(np.float32)
        latent += x @ rng.standard_normal((dim, 2)) / np.sqrt(dim)
    if len(dense_dims) >= 2:
        a, b = (features[k][:, 0] for k in list(dense_dims)[:2])
        latent[:, 0] += 0.5 * a * b
    for name, card in cat_cardinalities.items():
        idx = rng.integers(0, card, n)
        features[name] = idx
        latent += 0.5 * rng.standard_normal((card, 2))[idx]
    latent /= latent.std(axis=0) + 1e-9
    popularity, skippiness = latent[:, 0], latent[:, 1]
    plays = rng.poisson(np.exp(3.0 + 0.8 * popularity))
    skips = rng.binomial(plays, 1 / (1 + np.exp(0.3 - 1.2 * skippiness)))
    full = rng.binomial(plays - skips, 1 / (1 + np.exp(0.5 + 0.8 * skippiness)))
    # Length is known at creation (duration_bucket); watch time scales with it.
    bucket_card = cat_cardinalities.get("duration_bucket")
    position = (
        rng.random(n)
        if bucket_card is None
        else (features["duration_bucket"] + rng.random(n)) / bucket_card
    )
    duration = 5.0 + 50.0 * position
    has_plays = plays > 0
    avg_watch = duration / (1 + np.exp(skippiness)) * rng.lognormal(0, 0.2, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        skip_rate = np.where(has_plays, skips / plays, np.nan)
    for name in dense_dims:  # a few missing values, as for a creator without history
        features[name][rng.random(n) < 0.02, 0] = np.nan
    # Drawn after everything above, so the first labels stay what they were before these.
    likes = rng.binomial(plays, 1 / (1 + np.exp(2.0 - 0.5 * popularity + 0.5 * skippiness)))
    comments = rng.binomial(plays, 1 / (1 + np.exp(3.5 - 0.3 * popularity)))
    shares = rng.binomial(plays, 1 / (1 + np.exp(4.0 - 0.4 * popularity)))
    day0 = rng.binomial(plays, 0.4)
    followers = rng.poisson(np.exp(4.0 + 0.5 * popularity)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        engagement = np.where(has_plays, (likes + comments) / plays, np.nan)
        virality = np.where(followers > 0, (day0 + plays) / followers, np.nan)
    counters = {
        "plays": plays.astype(np.float64),
        "likes": likes.astype(np.float64),
        "comments": comments.astype(np.float64),
        "shares": shares.astype(np.float64),
    }
    data = QualityDataset(
        features=features,
        targets={
            "skips": skips.astype(np.float64),
            "avg_watch_time_s": np.where(has_plays, avg_watch, np.nan),
            "full_watches": full.astype(np.float64),
            "skip_rate": skip_rate,
            "plays": plays.astype(np.float64),
            "engagement_rate": engagement,
            "virality": virality,
        },
        plays=plays.astype(np.float64),
        counters=counters,
    )
    # A stand-in has no training days: its popularity classes are cut over all its rows.
    return data.with_popularity(
        PopularityScale.fit(counters, np.ones(n, bool), TrainSettings().popularity_weights)
    )
