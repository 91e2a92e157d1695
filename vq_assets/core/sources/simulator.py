"""A seeded, deterministic short-video platform that writes the lake's landing zone (DESIGN §3).

The world: creators with a latent talent, a home language, favourite topics, a production-quality
level and a follower count; videos whose latent *appeal* is a topic effect + creator talent +
production quality + a duration effect + a caption "hook" + noise; and watch events whose skip,
watch-fraction, full-watch and engagement rates are driven by appeal and duration. Most of the
appeal is visible at creation time (topic and quality in the pixels, topic/hook/language in the
caption, talent through the creator's history and followers) but not all of it.

Randomness is split into independent streams keyed by `(seed, stream, index)`:
creators by block of creator index, videos / media / events by day index counted from `origin`.
A day therefore never depends on how many days are simulated, and any day can be re-created
alone: `simulate(days=10)` writes the same first five days as `simulate(days=5)`, and
`simulate(start=origin + 5 days, origin=origin, days=5)` writes the last five.

Event day E holds the plays, that day, of every video created in the previous `TAIL_DAYS` days:
each video has an expected lifetime play count (its exposure) spread over time by a decaying
two-exponential kernel, so only one day of events is ever in memory.

`<root>/truth/` keeps each video's latent appeal and expected rates; the pipeline never reads it,
evaluation uses it to know the best achievable score.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import NDArray
from PIL import Image

from vq_assets.core.lake.contract import UTC_TS, VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.store import SUCCESS_MARKER

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
    ]
)



def expected_labels(truth: pa.Table) -> dict[str, np.ndarray]:
    """The label columns' expected values (DESIGN §4) from truth rows: what a predictor that
    knew each video's hidden appeal would predict at creation (the exposure draw excluded)."""

    def col(name: str) -> np.ndarray:
        return truth.column(name).to_numpy(zero_copy_only=False).astype(float)

    plays = col("expected_plays_7d_at_creation")
    like, comment = col("expected_like_rate"), col("expected_comment_rate")
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
    }


# Landing files are named the way an export job would; derived assets use lake.PART_FILE.
PART_FILE = "part-00000.parquet"
EVENT_ROW_GROUP = 1_000_000

TOPICS = ("dance", "talking_head", "cooking", "pets", "gaming", "travel", "comedy", "sports")
# Base appeal, median duration (s) and share of plays in the slow tail, per topic.
TOPIC_APPEAL = np.array([0.35, -0.45, 0.10, 0.45, -0.15, 0.0, 0.30, -0.25])
TOPIC_DURATION = np.array([15.0, 45.0, 35.0, 14.0, 30.0, 22.0, 18.0, 20.0])
TOPIC_TAIL = np.array([0.20, 0.25, 0.40, 0.30, 0.25, 0.40, 0.25, 0.20])

LANGUAGES = ("en", "es", "pt", "id", "ja", "ko", "ar", "hi")
LANGUAGE_P = np.array([0.38, 0.15, 0.10, 0.08, 0.07, 0.07, 0.07, 0.08])
# Audience size by language moves exposure, not appeal.
LANGUAGE_EXPOSURE = np.array([0.25, 0.10, 0.05, 0.0, -0.10, -0.10, -0.15, 0.0])
GREETINGS = ("hello", "hola", "olá", "halo", "こんにちは", "안녕", "مرحبا", "नमस्ते")

TOPIC_WORDS = {
    "dance": "dance choreo moves groove beat routine challenge step trend spin rhythm remix",
    "talking_head": "story opinion thoughts advice storytime rant podcast explain life truth "
    "lesson talk",
    "cooking": "recipe pasta dinner kitchen easy meal cook bake delicious homemade sauce chef",
    "pets": "dog cat puppy kitten cute pet fluffy paws zoomies doggo meow bark",
    "gaming": "game gameplay level boss speedrun clutch win stream controller noob glitch ranked",
    "travel": "travel beach city trip sunset mountain explore hotel island roadtrip view hike",
    "comedy": "funny prank joke laugh skit meme lol fail parody reaction comedy bit",
    "sports": "goal match football basketball training workout skills score team gym run sprint",
}
GENERIC_WORDS = (
    "my today new best this the so very really first quick daily little big crazy perfect "
    "ultimate simple weekend morning night"
).split()
HOOKS = (
    "wait for it",
    "watch till the end",
    "you won't believe this",
    "part 2",
    "must see",
    "the ending",
)
GENERIC_TAGS = ("#fyp", "#foryou", "#viral", "#trending", "#explore", "#new")

DAY_US = 86_400_000_000
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
TAIL_DAYS = 28  # plays later than this after creation are never generated
CREATOR_BLOCK = 256

# Exposure log-score: s = a*z_followers + b*appeal + language + c*noise; its mean is removed
# analytically (assuming s ~ Normal) so that `mean_plays` is the mean lifetime play count.
EXPO_FOLLOWERS, EXPO_APPEAL, EXPO_NOISE = 0.45, 0.55, 0.85
LOG_FOLLOWERS_MU, LOG_FOLLOWERS_SD = 7.0, 1.6
# Appeal = topic + 0.7 talent + 0.5 quality + duration + 0.35 hook + 0.45 noise.
APPEAL_TALENT, APPEAL_QUALITY, APPEAL_HOOK, APPEAL_NOISE = 0.7, 0.5, 0.35, 0.45
APPEAL_DURATION = -0.25  # per unit of log(duration / 20 s)
# Its variance: topic ~0.09, duration ~0.03, video quality = creator quality + 0.3 noise.
_APPEAL_VAR = (
    0.09 + APPEAL_TALENT**2 + APPEAL_QUALITY**2 * 1.09 + 0.03 + APPEAL_HOOK**2 + APPEAL_NOISE**2
)
# z_followers = 0.6 talent + 0.8 noise, so cov(z_followers, appeal) = 0.6 * APPEAL_TALENT.
_EXPO_VAR = (
    EXPO_FOLLOWERS**2
    + EXPO_APPEAL**2 * _APPEAL_VAR
    + 2 * EXPO_FOLLOWERS * EXPO_APPEAL * 0.6 * APPEAL_TALENT
    + float(LANGUAGE_P @ LANGUAGE_EXPOSURE**2 - (LANGUAGE_P @ LANGUAGE_EXPOSURE) ** 2)
    + EXPO_NOISE**2
)
_EXPO_SHIFT = float(LANGUAGE_P @ LANGUAGE_EXPOSURE) + _EXPO_VAR / 2

# Play-time kernel: a fast component (mean FAST_DAYS, jittered per video) and a slow tail.
FAST_DAYS, SLOW_DAYS = 0.7, 6.0
# Watch behaviour.
SKIP_MS = 3000
SKIP_BETA = (1.2, 2.0)  # skip watch time = 3 s * Beta
FRACTION_KAPPA = 4.0  # concentration of the watch-fraction Beta
EXACT_FULL_P = 0.55  # share of full watches that stop exactly at the end
REPLAY_P = 0.6  # geometric parameter of extra loops for replays
SKIP_ENGAGE, FULL_ENGAGE = 0.15, 1.5  # engagement multipliers for skips / full watches
FLAG_NULL_P = 0.02

_STREAM_CREATORS, _STREAM_VIDEOS, _STREAM_EVENTS, _STREAM_MEDIA = 0, 1, 2, 3

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass
class SimulationSummary:
    days: int
    videos: int
    events: int
    paths: list[str] = field(default_factory=list)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _sigmoid(x: FloatArray | float) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# creators


@dataclass
class _Creators:
    """Creator attributes by index; creator i depends only on (seed, i // CREATOR_BLOCK)."""

    seed: int
    talent: FloatArray = field(default_factory=lambda: np.empty(0))
    quality: FloatArray = field(default_factory=lambda: np.empty(0))
    home_language: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    fav1: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    fav2: IntArray = field(default_factory=lambda: np.empty(0, np.int64))
    log_followers0: FloatArray = field(default_factory=lambda: np.empty(0))
    growth: FloatArray = field(default_factory=lambda: np.empty(0))
    activity: FloatArray = field(default_factory=lambda: np.empty(0))

    def ensure(self, n: int) -> None:
        have = len(self.talent) // CREATOR_BLOCK
        blocks = [self._block(b) for b in range(have, -(-n // CREATOR_BLOCK))]
        for name in self._fields():
            parts = [getattr(self, name)] + [blk[name] for blk in blocks]
            setattr(self, name, np.concatenate(parts))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return (
            "talent",
            "quality",
            "home_language",
            "fav1",
            "fav2",
            "log_followers0",
            "growth",
            "activity",
        )

    def _block(self, b: int) -> dict[str, np.ndarray]:
        rng = _rng(self.seed, _STREAM_CREATORS, b)
        n, nt = CREATOR_BLOCK, len(TOPICS)
        talent = rng.standard_normal(n)
        fav1 = rng.integers(0, nt, n)
        fav2 = (fav1 + rng.integers(1, nt, n)) % nt
        fav2 = np.where(rng.random(n) < 0.5, fav2, fav1)  # half the creators stick to one topic
        z_followers = 0.6 * talent + 0.8 * rng.standard_normal(n)
        return {
            "talent": talent,
            "quality": 0.35 * talent + math.sqrt(1 - 0.35**2) * rng.standard_normal(n),
            "home_language": rng.choice(len(LANGUAGES), n, p=LANGUAGE_P),
            "fav1": fav1,
            "fav2": fav2,
            "log_followers0": LOG_FOLLOWERS_MU + LOG_FOLLOWERS_SD * z_followers,
            # daily log-growth of followers: always positive, faster for talented creators
            "growth": 0.003 + 0.012 * _sigmoid(talent + 0.5 * rng.standard_normal(n)),
            # heavy-tailed posting rate
            "activity": rng.lognormal(0.0, 1.1, n),
        }


def _active_creators(videos_per_day: int, day: int) -> int:
    """The creator pool grows over time; about 12 videos per creator over the run."""
    return max(20, -(-videos_per_day * (6 + day) // 12))


def _join_day(videos_per_day: int, creator: IntArray) -> IntArray:
    """The first day on which `_active_creators` includes each creator index."""
    later = np.maximum(0, 12 * creator // videos_per_day - 5)
    return np.where(creator < _active_creators(videos_per_day, 0), 0, later)


# --------------------------------------------------------------------------------------------
# videos


@dataclass
class _DayVideos:
    """Everything about one creation day's videos, as arrays aligned by row."""

    video_id: pa.Array
    creator: IntArray
    topic: IntArray
    language: IntArray
    language_null: NDArray[np.bool_]
    caption: list[str | None]
    created_us: IntArray
    duration_ms: IntArray
    followers: IntArray
    followers_null: NDArray[np.bool_]
    quality: FloatArray
    hook: FloatArray
    appeal: FloatArray
    exposure: FloatArray
    exposure_prior: FloatArray  # without the luck of distribution
    fast_days: FloatArray
    tail: FloatArray
    p_skip: FloatArray
    p_full: FloatArray
    frac_mean: FloatArray
    p_like: FloatArray
    p_comment: FloatArray
    p_share: FloatArray

    def __len__(self) -> int:
        return len(self.created_us)


def _day_start_us(date: dt.date) -> int:
    return (date.toordinal() - EPOCH_ORDINAL) * DAY_US


def _captions(
    rng: np.random.Generator, topic: IntArray, language: IntArray, hook: FloatArray
) -> list[str | None]:
    """Short captions: topic words + generic words + hashtags, sometimes a hook or a greeting.

    Topic words carry the topic, hooks carry part of the appeal, greetings the language.
    """
    n = len(topic)
    vocab = [TOPIC_WORDS[t].split() for t in TOPICS]
    n_topic = rng.integers(1, 4, n)
    n_generic = rng.integers(0, 3, n)
    n_tags = rng.integers(0, 4, n)
    topic_pick = rng.integers(0, 1 << 30, (n, 3))
    generic_pick = rng.integers(0, len(GENERIC_WORDS), (n, 2))
    tag_pick = rng.integers(0, 1 << 30, (n, 3))
    hook_pick = rng.integers(0, len(HOOKS), n)
    has_hook = rng.random(n) < _sigmoid(1.5 * hook - 1.0)
    has_greeting = rng.random(n) < 0.3
    null = rng.random(n) < 0.05
    out: list[str | None] = []
    for i in range(n):
        if null[i]:
            out.append(None)
            continue
        words_t = vocab[topic[i]]
        words = [GENERIC_WORDS[j] for j in generic_pick[i, : n_generic[i]]]
        words += [words_t[j % len(words_t)] for j in topic_pick[i, : n_topic[i]]]
        if has_greeting[i]:
            words.insert(0, GREETINGS[language[i]])
        if has_hook[i]:
            words.append(HOOKS[hook_pick[i]])
        tags = [f"#{TOPICS[topic[i]].replace('_', '')}", *GENERIC_TAGS]
        words += dict.fromkeys(tags[j % len(tags)] for j in tag_pick[i, : n_tags[i]])
        out.append(" ".join(words))
    return out


def _make_day(
    creators: _Creators,
    seed: int,
    origin: dt.date,
    day: int,
    videos_per_day: int,
    mean_plays: float,
) -> _DayVideos:
    rng = _rng(seed, _STREAM_VIDEOS, day)
    n = videos_per_day
    n_active = _active_creators(videos_per_day, day)
    creators.ensure(n_active)
    weights = creators.activity[:n_active]
    creator = rng.choice(n_active, n, p=weights / weights.sum())
    # Diurnal posting: more videos in the (UTC) afternoon and evening. Rows (and ids) follow
    # creation time, as an export would.
    hour_p = 1 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)
    hour = rng.choice(24, n, p=hour_p / hour_p.sum())
    day_start = _day_start_us(origin + dt.timedelta(days=day))
    created_us = day_start + hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, n)
    order = np.argsort(created_us, kind="stable")
    creator, created_us = creator[order], created_us[order]

    u = rng.random(n)
    random_topic = rng.integers(0, len(TOPICS), n)
    topic = np.where(
        u < 0.6, creators.fav1[creator], np.where(u < 0.9, creators.fav2[creator], random_topic)
    )

    u = rng.random(n)
    random_lang = rng.choice(len(LANGUAGES), n, p=LANGUAGE_P)
    language = np.where(
        u < 0.9, creators.home_language[creator], np.where(u < 0.95, 0, random_lang)
    )
    language_null = rng.random(n) < 0.05

    duration_s = np.clip(TOPIC_DURATION[topic] * np.exp(0.55 * rng.standard_normal(n)), 4, 180)
    duration_ms = np.round(duration_s * 1000).astype(np.int64)
    log_dur = np.log(duration_ms / 20_000)

    quality = creators.quality[creator] + 0.3 * rng.standard_normal(n)
    hook = rng.standard_normal(n)
    talent = creators.talent[creator]
    appeal = (
        TOPIC_APPEAL[topic]
        + APPEAL_TALENT * talent
        + APPEAL_QUALITY * quality
        + APPEAL_DURATION * log_dur
        + APPEAL_HOOK * hook
        + APPEAL_NOISE * rng.standard_normal(n)
    )

    days_active = day - _join_day(videos_per_day, creator)
    log_followers = creators.log_followers0[creator] + creators.growth[creator] * days_active
    followers = np.round(np.exp(log_followers)).astype(np.int64)
    followers_null = rng.random(n) < 0.03
    z_followers = (creators.log_followers0[creator] - LOG_FOLLOWERS_MU) / LOG_FOLLOWERS_SD
    log_exposure_prior = (
        EXPO_FOLLOWERS * z_followers + EXPO_APPEAL * appeal + LANGUAGE_EXPOSURE[language]
    )
    # The noise is distribution luck (virality): unknowable when the video is created.
    log_exposure = log_exposure_prior + EXPO_NOISE * rng.standard_normal(n)
    exposure = mean_plays * np.exp(log_exposure - _EXPO_SHIFT)
    exposure_prior = mean_plays * np.exp(log_exposure_prior - _EXPO_SHIFT)

    caption = _captions(rng, topic, language, hook)
    stamp = (origin + dt.timedelta(days=day)).strftime("%Y%m%d")
    video_id = pa.array([f"v{stamp}{i:07d}" for i in range(n)], pa.string())

    return _DayVideos(
        video_id=video_id,
        creator=creator,
        topic=topic,
        language=language,
        language_null=language_null,
        caption=caption,
        created_us=created_us,
        duration_ms=duration_ms,
        followers=followers,
        followers_null=followers_null,
        quality=quality,
        hook=hook,
        appeal=appeal,
        exposure=exposure,
        exposure_prior=exposure_prior,
        fast_days=FAST_DAYS * np.exp(0.25 * rng.standard_normal(n)),
        tail=TOPIC_TAIL[topic],
        # Skips fall with appeal and rise with length; full watches favour short, appealing videos.
        p_skip=_sigmoid(-0.9 - 1.1 * appeal + 0.5 * log_dur),
        p_full=_sigmoid(-0.8 + 1.0 * appeal - 1.0 * log_dur),
        frac_mean=_sigmoid(0.2 + 0.8 * appeal - 0.4 * log_dur),
        p_like=_sigmoid(-3.7 + 0.9 * appeal),
        p_comment=_sigmoid(-5.0 + 0.8 * appeal),
        p_share=_sigmoid(-5.5 + 1.0 * appeal),
    )


def _kernel_cdf(t_days: FloatArray, fast: FloatArray, tail: FloatArray) -> FloatArray:
    return (1 - tail) * -np.expm1(-t_days / fast) + tail * -np.expm1(-t_days / SLOW_DAYS)


def _videos_table(
    v: _DayVideos, video_uri: list[str] | None, cover_uri: list[str] | None, creator_ids: pa.Array
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


def _truth_table(v: _DayVideos, creators: _Creators, creator_ids: pa.Array) -> pa.Table:
    d = v.duration_ms / 1000.0
    p_skip, p_full = v.p_skip, v.p_full
    skip_mean = 3.0 * SKIP_BETA[0] / (SKIP_BETA[0] + SKIP_BETA[1])
    replay_extra = (1 - EXACT_FULL_P) * d * ((1 - REPLAY_P) / REPLAY_P + 0.5)
    watch = p_skip * skip_mean + (1 - p_skip) * (
        (1 - p_full) * (3.0 + (d - 3.0) * v.frac_mean) + p_full * (d + replay_extra)
    )
    engage = p_skip * SKIP_ENGAGE + (1 - p_skip) * (1 + (FULL_ENGAGE - 1) * p_full)
    lifetime = _kernel_cdf(np.full(len(v), float(TAIL_DAYS)), v.fast_days, v.tail)
    plays_7d = v.exposure * _kernel_cdf(np.full(len(v), 7.0), v.fast_days, v.tail)
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
            pa.array(v.exposure_prior * _kernel_cdf(np.full(len(v), 7.0), v.fast_days, v.tail)),
            pa.array(p_skip),
            pa.array((1 - p_skip) * p_full),
            pa.array(watch),
            pa.array(np.minimum(v.p_like * engage, 1.0)),
            pa.array(np.minimum(v.p_comment * engage, 1.0)),
            pa.array(np.minimum(v.p_share * engage, 1.0)),
        ],
        schema=TRUTH_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# events


def _events_table(
    window: list[_DayVideos], seed: int, day: int, day_start: int, n_users: int
) -> pa.Table:
    """Plays on `day` of every video in `window` (videos created on this and earlier days)."""
    rng = _rng(seed, _STREAM_EVENTS, day)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(v, name) for v in window])

    created = cat("created_us")
    fast, tail = cat("fast_days"), cat("tail")
    a = np.clip((day_start - created) / DAY_US, 0.0, TAIL_DAYS)
    b = np.clip((day_start + DAY_US - created) / DAY_US, 0.0, TAIL_DAYS)
    mass_fast = (1 - tail) * (np.exp(-a / fast) - np.exp(-b / fast))
    mass_slow = tail * (np.exp(-a / SLOW_DAYS) - np.exp(-b / SLOW_DAYS))
    counts = rng.poisson(cat("exposure") * (mass_fast + mass_slow))
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

    # Watch time in integer milliseconds so that skips (< 3 s), partial watches (< duration),
    # exact full watches (== duration) and replays (> duration) are exact after / 1000.
    dur = cat("duration_ms")[vi]
    skip = rng.random(n) < cat("p_skip")[vi]
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
    # Heavy users: low user numbers are drawn far more often.
    user = np.floor(n_users * rng.random(n) ** 2).astype(np.int64)

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


# --------------------------------------------------------------------------------------------
# media


_SIZE = 64
_FPS = 8
_YY, _XX = (g.astype(np.float32) / _SIZE for g in np.mgrid[0:_SIZE, 0:_SIZE])


def _discs(
    cx: np.ndarray, cy: np.ndarray, rx: float, ry: float | np.ndarray | None = None
) -> np.ndarray:
    """Soft-edged ellipse masks, one per frame: (T, H, W) in [0, 1]; ry may vary per frame."""
    ry = np.reshape(rx if ry is None else ry, (-1, 1, 1)).astype(np.float32)
    dx = (_XX - cx[:, None, None]) * np.float32(1 / rx)
    dy = (_YY - cy[:, None, None]) / ry
    dx *= dx
    dy *= dy
    dx += dy  # squared elliptic distance: no sqrt needed for a soft edge
    np.subtract(np.float32(3.5), dx * np.float32(6), out=dx)
    return np.clip(dx, 0, 1, out=dx)


def _paint(frames: np.ndarray, mask: np.ndarray, color: np.ndarray) -> None:
    """Alpha-blend a flat colour into `frames` in place where `mask` is set."""
    diff = color.astype(np.float32) - frames
    diff *= mask[:, None]
    frames += diff


def _color(rng: np.random.Generator, base: tuple[float, float, float]) -> np.ndarray:
    """A jittered colour shaped (3, 1, 1) to broadcast over channel-first images."""
    return np.clip(np.array(base) + rng.normal(0, 0.06, 3), 0, 1).astype(np.float32)[:, None, None]


def render_frames(rng: np.random.Generator, topic: str, quality: float) -> np.ndarray:
    """RGB uint8 frames (T, 64, 64, 3), 12 <= T <= 16, as the simulator renders them.

    The look and motion depend on the topic; a low production quality (a latent ~ N(0, 1))
    makes them blurred, dark, flat and noisy.
    """
    return _interleave(_render_planes(rng, topic, quality))


def _interleave(planes: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) -> (T, H, W, 3); per-channel copies beat a strided transpose by ~4x."""
    out = np.empty((planes.shape[0], *planes.shape[2:], 3), planes.dtype)
    for c in range(3):
        out[..., c] = planes[:, c]
    return out


def _render_planes(rng: np.random.Generator, topic: str, quality: float) -> np.ndarray:
    """Channel-first uint8 frames (T, 3, H, W); see `render_frames`."""
    n = int(rng.integers(12, 17))
    t = np.arange(n, dtype=np.float32) / _FPS
    # Channel-first while drawing: numpy broadcasts over a size-3 last axis slowly.
    frames = np.empty((n, 3, _SIZE, _SIZE), np.float32)
    phase = rng.uniform(0, 2 * np.pi, 4).astype(np.float32)
    if topic == "talking_head":
        # a mostly static centred face on a flat background
        frames[:] = _color(rng, (0.75, 0.78, 0.82))
        sway = 0.01 * np.sin(2 * np.pi * 0.3 * t + phase[0])
        _paint(
            frames,
            _discs(0.5 + sway, np.full(n, 0.48, np.float32), 0.2, 0.27),
            _color(rng, (0.85, 0.65, 0.5)),
        )
        mouth = 0.02 + 0.01 * np.abs(np.sin(2 * np.pi * 1.5 * t + phase[1]))
        _paint(
            frames,
            _discs(0.5 + sway, np.full(n, 0.6, np.float32), 0.06, mouth),
            _color(rng, (0.4, 0.1, 0.1)),
        )
    elif topic == "dance":
        # neon shapes moving fast on a dark stage
        frames[:] = _color(rng, (0.12, 0.05, 0.2))
        for k, c in enumerate(((1.0, 0.2, 0.8), (0.2, 1.0, 0.9), (1.0, 0.9, 0.2))):
            cx = 0.5 + 0.32 * np.sin(2 * np.pi * 1.3 * t + phase[k] + k)
            cy = 0.5 + 0.28 * np.cos(2 * np.pi * 1.7 * t + phase[k] * 2)
            _paint(frames, _discs(cx, cy, 0.13), _color(rng, c))
    elif topic == "cooking":
        # warm kitchen, a dark pan with food being stirred
        frames[:] = _color(rng, (0.6, 0.38, 0.2)) * (0.85 + 0.15 * np.sin(_YY * 40))
        centre = np.full(n, 0.5, np.float32)
        _paint(frames, _discs(centre, centre, 0.33), _color(rng, (0.15, 0.15, 0.15)))
        for k, c in enumerate(((1.0, 0.6, 0.1), (0.9, 0.85, 0.3), (0.3, 0.7, 0.2))):
            ang = 2 * np.pi * 0.25 * t + phase[k] + 2.1 * k
            _paint(
                frames,
                _discs(0.5 + 0.16 * np.cos(ang), 0.5 + 0.16 * np.sin(ang), 0.08),
                _color(rng, c),
            )
    elif topic == "pets":
        # a furry blob wandering on grass
        frames[:] = _color(rng, (0.35, 0.6, 0.3))
        walk = np.cumsum(rng.normal(0, 0.02, (2, n)), axis=1).astype(np.float32)
        cx, cy = 0.5 + walk[0], 0.55 + walk[1]
        fur = _color(rng, (0.8, 0.6, 0.35))
        _paint(frames, _discs(cx, cy, 0.22, 0.15), fur)
        _paint(frames, _discs(cx + 0.18, cy - 0.12, 0.1), fur * 0.9)
    elif topic == "gaming":
        # high-contrast saturated blocks scrolling, plus a HUD bar
        grid = rng.integers(0, 2, (8, 16, 3)).astype(np.float32)
        shift = (np.floor(t * 8) % 8).astype(np.int64)  # one block per frame
        cols = (np.arange(_SIZE)[None, :] // 8 + shift[:, None]) % 16
        rows = np.arange(_SIZE) // 8
        frames[:] = grid[rows[None, :, None], cols[:, None, :]].transpose(0, 3, 1, 2)
        frames[:, :, :6] = _color(rng, (0.05, 0.05, 0.05))
    elif topic == "travel":
        # sky over sea with a slowly panning mountain skyline
        sky = _color(rng, (0.45, 0.7, 0.95))
        sea = _color(rng, (0.1, 0.4, 0.6))
        frames[:] = sky * (1 - 0.4 * _YY) * (_YY < 0.62) + sea * (_YY >= 0.62)
        ridge = 0.45 + 0.08 * np.sin(8 * (_XX[None, 0, :] + 0.05 * t[:, None]) + phase[0])
        mask = ((_YY[None] > ridge[:, None, :]) & (_YY[None] < 0.62)).astype(np.float32)
        _paint(frames, mask, _color(rng, (0.3, 0.35, 0.3)))
    elif topic == "comedy":
        # bright background, two characters, a jump cut half way
        frames[:] = _color(rng, (1.0, 0.85, 0.2))
        cut = (t >= t[n // 2]).astype(np.float32)
        left = np.full(n, 0.3, np.float32) + 0.4 * cut
        _paint(
            frames, _discs(left, np.full(n, 0.5, np.float32), 0.15), _color(rng, (0.9, 0.3, 0.3))
        )
        _paint(
            frames,
            _discs(1 - left, np.full(n, 0.55, np.float32), 0.13),
            _color(rng, (0.2, 0.4, 0.9)),
        )
    else:  # sports: a green field with white lines and a fast ball
        frames[:] = _color(rng, (0.2, 0.55, 0.2))
        frames[:, :, :, ::16] = 0.95
        x = np.abs(((0.1 + 0.9 * t + phase[0]) % 2) - 1)
        y = np.abs(((0.2 + 0.7 * t + phase[1]) % 2) - 1)
        _paint(frames, _discs(0.1 + 0.8 * x, 0.1 + 0.8 * y, 0.06), np.ones((3, 1, 1), np.float32))

    # Production quality: low = blurred, dark, low-contrast and noisy.
    q = float(_sigmoid(1.2 * quality))
    for _ in range((q < 0.45) + (q < 0.25)):  # separable 3x3 box blur, once or twice
        pad = np.pad(frames, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        rows = pad[:, :, :-2] + pad[:, :, 1:-1] + pad[:, :, 2:]
        frames = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
        frames *= np.float32(1 / 9)
    contrast, brightness = 0.55 + 0.45 * q, 0.45 + 0.55 * q
    frames *= np.float32(contrast * brightness * 255)
    frames += np.float32(0.5 * (1 - contrast) * brightness * 255 + 0.5)  # + 0.5: rounds below
    amp = 0.2 * (1 - q) * 255
    if amp > 12:
        noise = rng.random(frames.shape, dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(amp)
        frames += noise
    return np.clip(frames, 0, 255, out=frames).astype(np.uint8)


# One thread (tiny frames: threading costs more than it saves), a cheap motion search, and no
# B-frames / lookahead: with a lookahead, x264 gave run-to-run byte differences on these tiny
# frames; without one, identical inputs give identical files.
_X264_OPTIONS = {
    "preset": "veryfast",
    "tune": "zerolatency",
    "threads": "1",
    "crf": "30",
    "x264-params": "subme=1:me=dia:ref=1:trellis=0",
}


@cache
def _video_codec() -> tuple[str, dict[str, str]]:
    """libx264 when this PyAV build has it, else the always-available mpeg4 encoder."""
    try:
        _encode_with("libx264", _X264_OPTIONS, _yuv420p(np.zeros((2, 3, _SIZE, _SIZE), np.uint8)))
        return "libx264", _X264_OPTIONS
    except (av.FFmpegError, ValueError):
        return "mpeg4", {"threads": "1"}


def _yuv420p(planes: np.ndarray) -> np.ndarray:
    """uint8 RGB planes (T, 3, H, W) -> yuv420p frames (T, H * 3 / 2, W), BT.601 limited range.

    Converting here from the planes the renderer draws is much faster than converting
    interleaved rgb24 (strided) with numpy or swscale.
    """
    n, _, h, w = planes.shape
    f = planes.astype(np.float32)
    out = np.empty((n, h * 3 // 2, w), np.uint8)
    out[:, :h] = 0.257 * f[:, 0] + 0.504 * f[:, 1] + 0.098 * f[:, 2] + 16.5
    s = f[:, :, 0::2, 0::2] + f[:, :, 1::2, 0::2] + f[:, :, 0::2, 1::2] + f[:, :, 1::2, 1::2]
    r, g, b = s[:, 0], s[:, 1], s[:, 2]  # 2x2 sums: chroma is subsampled
    u = 0.25 * (-0.148 * r - 0.291 * g + 0.439 * b) + 128.5
    v = 0.25 * (0.439 * r - 0.368 * g - 0.071 * b) + 128.5
    out[:, h : h + h // 4] = u.reshape(n, h // 4, w)
    out[:, h + h // 4 :] = v.reshape(n, h // 4, w)
    return out


def _encode_with(codec: str, options: dict[str, str], frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=_FPS)
        stream.width, stream.height, stream.pix_fmt = _SIZE, _SIZE, "yuv420p"
        stream.options = options
        for i, yuv in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


def encode_mp4(frames: np.ndarray) -> bytes:
    """Encode RGB uint8 frames (T, 64, 64, 3) as an mp4 at 8 fps (libx264, else mpeg4)."""
    return _encode_with(*_video_codec(), _yuv420p(np.moveaxis(frames, -1, 1)))


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# writing


def _write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def _write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table, row_group: int) -> None:
    with fs.open_output_stream(path) as out:
        pq.write_table(table, out, row_group_size=row_group, compression="zstd")


def simulate(
    fs: pafs.FileSystem,
    root: str,
    start: dt.date,
    days: int,
    videos_per_day: int,
    seed: int = 0,
    *,
    mean_plays: float = 60.0,
    media: bool = True,
    origin: dt.date | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Write `days` landing days from `start`: videos, watch events, media and truth.

    `root` is the lake root as a path inside `fs` ("bucket/prefix" for S3). `origin` is the day
    the simulated platform opens (default `start`); a later `start` with the same `origin`
    writes exactly the days a longer run from `origin` would, so a lake can be extended day by
    day. Each day's `_SUCCESS` markers are written after its data (and its media).
    """
    if seed < 0 or days < 0 or videos_per_day < 1 or mean_plays <= 0:
        raise ValueError("need seed >= 0, days >= 0, videos_per_day >= 1 and mean_plays > 0")
    origin = start if origin is None else origin
    first = (start - origin).days
    if first < 0:
        raise ValueError(f"start {start} precedes origin {origin}")
    root = root.rstrip("/")
    is_s3 = isinstance(fs, pafs.S3FileSystem)
    uri_prefix = "s3://" if is_s3 else ""
    n_users = max(1_000, videos_per_day * 40)

    def mkdir(path: str) -> None:
        if not is_s3:  # S3 has no directories; creating markers there only adds clutter
            fs.create_dir(path, recursive=True)

    creators = _Creators(seed)
    window: dict[int, _DayVideos] = {}
    summary = SimulationSummary(days=days, videos=0, events=0)
    if media:
        for kind in ("videos", "covers"):
            mkdir(f"{root}/landing/media/{kind}")

    for day in range(first, first + days):
        # Keep the creation days whose videos can still be played today.
        for old in [d for d in window if d <= day - TAIL_DAYS - 1]:
            del window[old]
        for d in range(max(0, day - TAIL_DAYS), day + 1):
            if d not in window:
                window[d] = _make_day(creators, seed, origin, d, videos_per_day, mean_plays)
        v = window[day]
        date = origin + dt.timedelta(days=day)
        dt_dir = f"dt={date.isoformat()}"
        # Re-writing a day: withdraw its markers first so nobody reads a half-written day.
        for table_dir in ("landing/videos", "landing/watch_events"):
            marker = f"{root}/{table_dir}/{dt_dir}/{SUCCESS_MARKER}"
            if fs.get_file_info(marker).type == pafs.FileType.File:
                fs.delete_file(marker)

        video_uri = cover_uri = None
        if media:
            video_uri, cover_uri = [], []
            mrng = _rng(seed, _STREAM_MEDIA, day)
            for i, vid in enumerate(v.video_id.to_pylist()):
                planes = _render_planes(mrng, TOPICS[v.topic[i]], float(v.quality[i]))
                mp4 = f"{root}/landing/media/videos/{vid}.mp4"
                jpg = f"{root}/landing/media/covers/{vid}.jpg"
                _write(fs, mp4, _encode_with(*_video_codec(), _yuv420p(planes)))
                _write(fs, jpg, _jpeg(_interleave(planes[:1])[0]))  # the cover is frame 0
                video_uri.append(uri_prefix + mp4)
                cover_uri.append(uri_prefix + jpg)
                summary.paths += [mp4, jpg]

        creator_ids = pa.array([f"c{c:07d}" for c in v.creator], pa.string())
        outputs = [
            ("landing/videos", _videos_table(v, video_uri, cover_uri, creator_ids), True),
            ("truth/videos", _truth_table(v, creators, creator_ids), False),
        ]
        events = _events_table(
            [window[d] for d in sorted(window)], seed, day, _day_start_us(date), n_users
        )
        outputs.append(("landing/watch_events", events, True))
        for table_dir, table, marker in outputs:
            directory = f"{root}/{table_dir}/{dt_dir}"
            mkdir(directory)
            path = f"{directory}/{PART_FILE}"
            _write_parquet(fs, path, table, EVENT_ROW_GROUP)
            summary.paths.append(path)
            if marker:
                _write(fs, f"{directory}/{SUCCESS_MARKER}", b"")
                summary.paths.append(f"{directory}/{SUCCESS_MARKER}")

        summary.videos += len(v)
        summary.events += events.num_rows
        if progress is not None:
            progress(f"simulated {date}: {len(v):,} videos, {events.num_rows:,} events")
    return summary


def simulate_local(
    root: str | os.PathLike[str],
    start: dt.date,
    days: int,
    videos_per_day: int,
    seed: int = 0,
    **kwargs: Any,
) -> SimulationSummary:
    """`simulate` into a local folder (created if missing); URIs are absolute paths."""
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return simulate(pafs.LocalFileSystem(), str(path), start, days, videos_per_day, seed, **kwargs)
