"""A simulated day as rows: the landing `videos` and `watch_events` (or `video_daily_stats`)
tables, and the hidden truth.

`<root>/truth/` keeps each video's latent appeal and expected rates; the pipeline never reads it,
evaluation uses it (through `expected_labels`) to know the best achievable score.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.labels.daily_stats import DAILY_STATS_SCHEMA
from vq_assets.core.lake.contract import UTC_TS, VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA

from .world import (
    DAY_US,
    EXACT_FULL_P,
    FLAG_NULL_P,
    FRACTION_KAPPA,
    FULL_ENGAGE,
    LANGUAGES,
    REPLAY_P,
    SESSION_GAP_US,
    SESSION_PLAYS,
    SKIP_BETA,
    SKIP_ENGAGE,
    SKIP_MS,
    SLOW_DAYS,
    STREAM_EVENTS,
    TAIL_DAYS,
    TASTE_SHARE,
    TOPICS,
    Creators,
    DayVideos,
    Viewers,
    kernel_cdf,
    stream_rng,
    taste_group,
)

TRUTH_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("creator_id", pa.string()),
        ("topic", pa.string()),
        ("language", pa.string()),  # the true language, also where the landing row has null
        ("creator_talent", pa.float64()),
        ("production_quality", pa.float64()),
        ("hook", pa.float64()),
        ("appeal", pa.float64()),
        ("expected_plays", pa.float64()),  # lifetime (TAIL_DAYS)
        ("expected_plays_7d", pa.float64()),
        # Expected 7-day plays without the distribution-luck draw: what creation time allows.
        ("expected_plays_7d_at_creation", pa.float64()),
        ("expected_skip_rate", pa.float64()),  # per play; constant over the video's life
        ("expected_full_watch_rate", pa.float64()),
        ("expected_avg_watch_time_s", pa.float64()),
        ("expected_like_rate", pa.float64()),
        ("expected_comment_rate", pa.float64()),
        ("expected_share_rate", pa.float64()),
        # Expected plays in [c, c + 24 h), without the distribution-luck draw.
        ("expected_plays_day0_at_creation", pa.float64()),
        ("followers", pa.int64()),  # as landed (creator_followers; null where unknown)
    ]
)

# The counters `video_daily_stats` can carry besides its key (`video_id`, `day`).
DAILY_STATS_COUNTERS = tuple(DAILY_STATS_SCHEMA.names[2:])


def expected_labels(truth: pa.Table) -> dict[str, np.ndarray]:
    """The label columns' expected values (DESIGN §4) from truth rows: what a predictor that
    knew each video's hidden appeal would predict at creation (the exposure draw excluded).

    `day0_plays` and `virality` (NaN where followers are null or 0, as the label is null) come
    only from truth written with their columns (older lakes' truth lacks them).
    """

    def col(name: str) -> np.ndarray:
        return truth.column(name).to_numpy(zero_copy_only=False).astype(float)

    plays = col("expected_plays_7d_at_creation")
    like, comment = col("expected_like_rate"), col("expected_comment_rate")
    day0: dict[str, np.ndarray] = {}
    if {"expected_plays_day0_at_creation", "followers"} <= set(truth.column_names):
        plays0 = col("expected_plays_day0_at_creation")
        followers = col("followers")  # null -> NaN
        with np.errstate(divide="ignore", invalid="ignore"):
            virality = np.where(followers > 0, (plays0 + plays) / followers, np.nan)
        day0 = {"day0_plays": plays0, "virality": virality}
    return {
        "plays": plays,
        "skips": plays * col("expected_skip_rate"),
        "full_watches": plays * col("expected_full_watch_rate"),
        "avg_watch_time_s": col("expected_avg_watch_time_s"),
        "skip_rate": col("expected_skip_rate"),
        "likes": plays * like,
        "comments": plays * comment,
        "shares": plays * col("expected_share_rate"),
        "engagement_rate": like + comment,
        **day0,
    }


# --------------------------------------------------------------------------------------------
# rows


def videos_table(
    v: DayVideos, video_uri: list[str] | None, cover_uri: list[str] | None, creator_ids: pa.Array
) -> pa.Table:
    lang = pa.array([LANGUAGES[i] for i in v.language], pa.string(), mask=v.language_null)
    return pa.table(
        [
            v.video_id,
            creator_ids,
            pa.array(v.created_us, UTC_TS),
            pa.array(v.duration_ms / 1000.0, pa.float64()),
            lang,
            pa.array(v.caption, pa.string()),
            pa.array(video_uri if video_uri else [None] * len(v), pa.string()),
            pa.array(cover_uri if cover_uri else [None] * len(v), pa.string()),
            pa.array(v.followers, pa.int64(), mask=v.followers_null),
        ],
        schema=VIDEOS_SCHEMA,
    )


def truth_table(v: DayVideos, creators: Creators, creator_ids: pa.Array) -> pa.Table:
    d = v.duration_ms / 1000.0
    p_skip, p_full = v.p_skip, v.p_full
    skip_mean = 3.0 * SKIP_BETA[0] / (SKIP_BETA[0] + SKIP_BETA[1])
    replay_extra = (1 - EXACT_FULL_P) * d * ((1 - REPLAY_P) / REPLAY_P + 0.5)
    watch = p_skip * skip_mean + (1 - p_skip) * (
        (1 - p_full) * (3.0 + (d - 3.0) * v.frac_mean) + p_full * (d + replay_extra)
    )
    engage = p_skip * SKIP_ENGAGE + (1 - p_skip) * (1 + (FULL_ENGAGE - 1) * p_full)
    lifetime = kernel_cdf(np.full(len(v), float(TAIL_DAYS)), v.fast_days, v.tail)
    plays_7d = v.exposure * kernel_cdf(np.full(len(v), 7.0), v.fast_days, v.tail)
    plays_day0 = v.exposure_prior * kernel_cdf(np.full(len(v), 1.0), v.fast_days, v.tail)
    return pa.table(
        [
            v.video_id,
            creator_ids,
            pa.array([TOPICS[i] for i in v.topic], pa.string()),
            pa.array([LANGUAGES[i] for i in v.language], pa.string()),
            pa.array(creators.talent[v.creator]),
            pa.array(v.quality),
            pa.array(v.hook),
            pa.array(v.appeal),
            pa.array(v.exposure * lifetime),
            pa.array(plays_7d),
            pa.array(v.exposure_prior * kernel_cdf(np.full(len(v), 7.0), v.fast_days, v.tail)),
            pa.array(p_skip),
            pa.array((1 - p_skip) * p_full),
            pa.array(watch),
            pa.array(np.minimum(v.p_like * engage, 1.0)),
            pa.array(np.minimum(v.p_comment * engage, 1.0)),
            pa.array(np.minimum(v.p_share * engage, 1.0)),
            pa.array(plays_day0),
            pa.array(v.followers, pa.int64(), mask=v.followers_null),
        ],
        schema=TRUTH_SCHEMA,
    )


def daily_stats_table(
    window: list[DayVideos], events: pa.Table, date: dt.date, counters: Sequence[str]
) -> pa.Table:
    """The `video_daily_stats` rows of `date` from its `events` (plays of the `window`'s videos):
    one row per video played that day, in `video_id` order, with only the columns `counters`
    names besides `video_id` and `day`, as a platform that keeps no other counter would write.

    Counted exactly as the labels count events: skips under 3 s, full watches at or past the
    duration, both compared in integer milliseconds; watch time summed in milliseconds, so the
    sum does not depend on the order of the events.
    """
    ids = pa.concat_arrays([v.video_id for v in window])
    duration_ms = np.concatenate([v.duration_ms for v in window])
    n = len(ids)
    vi = pc.index_in(events.column("video_id"), value_set=ids).to_numpy(zero_copy_only=False)
    watch_ms = np.round(events.column("watch_time_s").to_numpy() * 1000).astype(np.int64)
    plays = np.bincount(vi, minlength=n)
    rows = np.flatnonzero(plays)

    def count(weights: np.ndarray) -> np.ndarray:
        return np.round(np.bincount(vi, weights=weights, minlength=n)[rows]).astype(np.int64)

    def flagged(name: str) -> np.ndarray:
        return count(pc.fill_null(events.column(name), False).to_numpy(zero_copy_only=False))

    columns = {
        "video_id": ids.take(pa.array(rows)),
        "day": pa.array([date] * len(rows), pa.date32()),
        "plays": plays[rows],
        "skips": count(watch_ms < SKIP_MS),
        "full_watches": count(watch_ms >= duration_ms[vi]),
        "watch_time_s_sum": count(watch_ms) / 1000.0,
        "likes": flagged("liked"),
        "comments": flagged("commented"),
        "shares": flagged("shared"),
    }
    schema = pa.schema(f for f in DAILY_STATS_SCHEMA if f.name in ("video_id", "day", *counters))
    return pa.table([columns[name] for name in schema.names], schema=schema)


# --------------------------------------------------------------------------------------------
# events


def viewers_for(
    rng: np.random.Generator, viewers: Viewers, ts: np.ndarray, group: np.ndarray, taste: np.ndarray
) -> np.ndarray:
    """The viewer of each play: exploration plays go to anyone (heavy viewers, the low numbers,
    far more often); taste-led plays come in sessions, runs of plays of one taste group close in
    time (about SESSION_PLAYS each, split at pauses over SESSION_GAP_US), each session watched
    by one viewer of that group. So viewers who co-watch share a topic and a language."""
    user = np.floor(viewers.n * rng.random(len(ts)) ** 2).astype(np.int64)
    led = np.flatnonzero(taste)
    led = led[np.lexsort((ts[led], group[led]))]
    g, t = group[led], ts[led]
    new = np.ones(len(led), bool)
    new[1:] = (g[1:] != g[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_US)
    new |= rng.random(len(led)) < 1.0 / SESSION_PLAYS
    session = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    pick = rng.random(len(starts)) ** 2
    sizes = np.array([len(m) for m in viewers.members])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate([*viewers.members, [0]])
    size = sizes[g[starts]]
    chosen = flat[offsets[g[starts]] + np.floor(size * pick).astype(np.int64)]
    # A group nobody belongs to (a tiny world) falls back to any viewer.
    chosen = np.where(size > 0, chosen, np.floor(viewers.n * pick).astype(np.int64))
    user[led] = chosen[session]
    return user


@dataclass(frozen=True)
class LoopPlays:
    """What the closed loop changes on an event day (`closed_loop`), per video of the window:
    when its organic plays start (the day after its creation, instead of at creation) and its
    organic exposure (after feedback); and the day's cold-start plays, placed by a policy:
    window index, time (µs) and viewer of each."""

    organic_start: np.ndarray
    exposure: np.ndarray
    cold_video: np.ndarray
    cold_ts: np.ndarray
    cold_user: np.ndarray


def events_table(
    window: list[DayVideos],
    seed: int,
    day: int,
    day_start: int,
    viewers: Viewers,
    loop: LoopPlays | None = None,
) -> pa.Table:
    """Plays on `day` of every video in `window` (videos created on this and earlier days),
    each by a viewer of `viewers` (see `viewers_for`); with `loop`, the closed loop's organic
    plays plus its cold-start plays (exploration plays, by the viewers it names)."""
    rng = stream_rng(seed, STREAM_EVENTS, day)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(v, name) for v in window])

    created = cat("created_us") if loop is None else loop.organic_start
    exposure = cat("exposure") if loop is None else loop.exposure
    fast, tail = cat("fast_days"), cat("tail")
    a = np.clip((day_start - created) / DAY_US, 0.0, TAIL_DAYS)
    b = np.clip((day_start + DAY_US - created) / DAY_US, 0.0, TAIL_DAYS)
    mass_fast = (1 - tail) * (np.exp(-a / fast) - np.exp(-b / fast))
    mass_slow = tail * (np.exp(-a / SLOW_DAYS) - np.exp(-b / SLOW_DAYS))
    counts = rng.poisson(exposure * (mass_fast + mass_slow))
    vi = np.repeat(np.arange(len(created)), counts)
    n = len(vi)

    # Event time: pick a kernel component by its mass inside the day, then invert its
    # exponential CDF truncated to [a, b).
    slow = rng.random(n) < (mass_slow / np.maximum(mass_fast + mass_slow, 1e-300))[vi]
    scale = np.where(slow, SLOW_DAYS, fast[vi])
    ea, eb = np.exp(-a[vi] / scale), np.exp(-b[vi] / scale)
    tau = -scale * np.log(ea - rng.random(n) * (ea - eb))
    ts = created[vi] + np.floor(tau * DAY_US).astype(np.int64)
    ts = np.clip(ts, np.maximum(created[vi], day_start), day_start + DAY_US - 1)
    cold = np.zeros(n, bool)
    if loop is not None:
        vi = np.concatenate([vi, loop.cold_video])
        ts = np.concatenate([ts, loop.cold_ts])
        cold = np.concatenate([cold, np.ones(len(loop.cold_video), bool)])
        n = len(vi)

    # Watch time in integer milliseconds so that skips (< 3 s), partial watches (< duration),
    # exact full watches (== duration) and replays (> duration) are exact after / 1000.
    dur = cat("duration_ms")[vi]
    taste = (rng.random(n) < TASTE_SHARE) & ~cold  # cold-start plays are exploration
    p_skip = np.where(taste, cat("p_skip_taste")[vi], cat("p_skip_explore")[vi])
    skip = rng.random(n) < p_skip
    full = ~skip & (rng.random(n) < cat("p_full")[vi])
    m = cat("frac_mean")[vi]
    frac = np.minimum(rng.beta(FRACTION_KAPPA * m, FRACTION_KAPPA * (1 - m)), 1 - 1e-9)
    partial_ms = SKIP_MS + np.floor((dur - SKIP_MS) * frac).astype(np.int64)
    skip_ms = np.minimum(np.floor(SKIP_MS * rng.beta(*SKIP_BETA, n)).astype(np.int64), SKIP_MS - 1)
    loops = rng.geometric(REPLAY_P, n) - 1
    replay_ms = dur * (1 + loops) + np.floor(rng.random(n) * dur).astype(np.int64) + 1
    full_ms = np.where(rng.random(n) < EXACT_FULL_P, dur, replay_ms)
    watch_ms = np.where(skip, skip_ms, np.where(full, full_ms, partial_ms))

    engage = np.where(skip, SKIP_ENGAGE, np.where(full, FULL_ENGAGE, 1.0))

    def flag(p_name: str) -> pa.Array:
        value = rng.random(n) < np.minimum(cat(p_name)[vi] * engage, 1.0)
        return pa.array(value, pa.bool_(), mask=rng.random(n) < FLAG_NULL_P)

    liked, commented, shared = flag("p_like"), flag("p_comment"), flag("p_share")
    group = taste_group(cat("topic"), cat("language"))[vi]
    user = viewers_for(rng, viewers, ts, group, taste)
    if loop is not None:
        user[cold] = loop.cold_user

    order = np.argsort(ts, kind="stable")
    order_pa = pa.array(order)
    video_ids = pa.concat_arrays([v.video_id for v in window])
    user_ids = pc.binary_join_element_wise("u", pc.cast(pa.array(user[order]), pa.string()), "")
    return pa.table(
        [
            pc.take(video_ids, pa.array(vi[order])),
            user_ids,
            pa.array(ts[order], UTC_TS),
            pa.array(watch_ms[order] / 1000.0, pa.float64()),
            pc.take(liked, order_pa),
            pc.take(commented, order_pa),
            pc.take(shared, order_pa),
        ],
        schema=WATCH_EVENTS_SCHEMA,
    )
