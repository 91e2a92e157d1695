"""The simulated world: creators, each creation day's videos, their captions and exposure.

Everything here is drawn from the streams of `stream_rng`, so a creator block or a creation day
is the same whichever run draws it; `tables` turns a day into rows.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from .captions import LANGUAGES, TOPICS, captions

# Base appeal, median duration (s) and share of plays in the slow tail, per topic.
TOPIC_APPEAL = np.array([0.35, -0.45, 0.10, 0.45, -0.15, 0.0, 0.30, -0.25])
TOPIC_DURATION = np.array([15.0, 45.0, 35.0, 14.0, 30.0, 22.0, 18.0, 20.0])
TOPIC_TAIL = np.array([0.20, 0.25, 0.40, 0.30, 0.25, 0.40, 0.25, 0.20])

LANGUAGE_P = np.array([0.38, 0.15, 0.10, 0.08, 0.07, 0.07, 0.07, 0.08])
# Audience size by language moves exposure, not appeal.
LANGUAGE_EXPOSURE = np.array([0.25, 0.10, 0.05, 0.0, -0.10, -0.10, -0.15, 0.0])

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
# Viewers' tastes: this share of plays is taste-led (a viewer who likes the topic and speaks the
# language, in a session of such plays); those are skipped less, the exploration plays more.
TASTE_SHARE = 0.7
TASTE_SKIP = 0.8  # logit gap between exploration and taste-led skips
SESSION_PLAYS = 8  # mean taste-led plays per session
SESSION_GAP_US = 20 * 60 * 1_000_000  # a longer pause between plays starts a new session

STREAM_CREATORS, STREAM_VIDEOS, STREAM_EVENTS, STREAM_MEDIA, STREAM_USERS = 0, 1, 2, 3, 4

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The independent random stream `stream` of `seed` for one creator block or day."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def sigmoid(x: FloatArray | float) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# creators


@dataclass
class Creators:
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
        rng = stream_rng(self.seed, STREAM_CREATORS, b)
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
            "growth": 0.003 + 0.012 * sigmoid(talent + 0.5 * rng.standard_normal(n)),
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
# viewers


@dataclass
class Viewers:
    """Viewers with tastes: each speaks one language and likes one or two topics.

    `members[g]` lists (ascending) the viewers of taste group g = topic * len(LANGUAGES) +
    language: those who like the topic and speak the language. Low viewer numbers are the
    heavy viewers, inside a group as over all plays. Depends only on (seed, n).
    """

    n: int
    language: IntArray
    fav1: IntArray
    fav2: IntArray
    members: list[IntArray]

    @classmethod
    def make(cls, seed: int, n: int) -> Viewers:
        rng = stream_rng(seed, STREAM_USERS, 0)
        nt = len(TOPICS)
        language = rng.choice(len(LANGUAGES), n, p=LANGUAGE_P)
        fav1 = rng.integers(0, nt, n)
        fav2 = np.where(rng.random(n) < 0.7, (fav1 + rng.integers(1, nt, n)) % nt, fav1)
        members = []
        for g in range(nt * len(LANGUAGES)):
            topic, lang = divmod(g, len(LANGUAGES))
            members.append(np.flatnonzero((language == lang) & ((fav1 == topic) | (fav2 == topic))))
        return cls(n, language, fav1, fav2, members)


def taste_group(topic: IntArray, language: IntArray) -> IntArray:
    return topic * len(LANGUAGES) + language


# --------------------------------------------------------------------------------------------
# videos


@dataclass
class DayVideos:
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
    p_skip: FloatArray  # per play, over taste-led and exploration plays (their TASTE_SHARE mix)
    p_skip_taste: FloatArray
    p_skip_explore: FloatArray
    p_full: FloatArray
    frac_mean: FloatArray
    p_like: FloatArray
    p_comment: FloatArray
    p_share: FloatArray

    def __len__(self) -> int:
        return len(self.created_us)


def day_start_us(date: dt.date) -> int:
    return (date.toordinal() - EPOCH_ORDINAL) * DAY_US


def make_day(
    creators: Creators,
    seed: int,
    origin: dt.date,
    day: int,
    videos_per_day: int,
    mean_plays: float,
) -> DayVideos:
    rng = stream_rng(seed, STREAM_VIDEOS, day)
    n = videos_per_day
    n_active = _active_creators(videos_per_day, day)
    creators.ensure(n_active)
    weights = creators.activity[:n_active]
    creator = rng.choice(n_active, n, p=weights / weights.sum())
    # Diurnal posting: more videos in the (UTC) afternoon and evening. Rows (and ids) follow
    # creation time, as an export would.
    hour_p = 1 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)
    hour = rng.choice(24, n, p=hour_p / hour_p.sum())
    day_start = day_start_us(origin + dt.timedelta(days=day))
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

    # Skips fall with appeal and rise with length, less for viewers who like the topic.
    skip_logit = -0.9 - 1.1 * appeal + 0.5 * log_dur
    p_skip_taste = sigmoid(skip_logit - TASTE_SKIP * (1 - TASTE_SHARE))
    p_skip_explore = sigmoid(skip_logit + TASTE_SKIP * TASTE_SHARE)

    # Hooks carry part of the appeal: captions with a strong one show it more often.
    caption = captions(rng, topic, language, sigmoid(1.5 * hook - 1.0))
    stamp = (origin + dt.timedelta(days=day)).strftime("%Y%m%d")
    video_id = pa.array([f"v{stamp}{i:07d}" for i in range(n)], pa.string())

    return DayVideos(
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
        p_skip=TASTE_SHARE * p_skip_taste + (1 - TASTE_SHARE) * p_skip_explore,
        p_skip_taste=p_skip_taste,
        p_skip_explore=p_skip_explore,
        # Full watches favour short, appealing videos.
        p_full=sigmoid(-0.8 + 1.0 * appeal - 1.0 * log_dur),
        frac_mean=sigmoid(0.2 + 0.8 * appeal - 0.4 * log_dur),
        p_like=sigmoid(-3.7 + 0.9 * appeal),
        p_comment=sigmoid(-5.0 + 0.8 * appeal),
        p_share=sigmoid(-5.5 + 1.0 * appeal),
    )


def kernel_cdf(t_days: FloatArray, fast: FloatArray, tail: FloatArray) -> FloatArray:
    """Share of a video's exposure played within `t_days` of its creation."""
    return (1 - tail) * -np.expm1(-t_days / fast) + tail * -np.expm1(-t_days / SLOW_DAYS)
