"""The flywheel A/B: each arm's outcomes on a creation day's new videos, the treatment-minus-
control differences with user-level bootstrap intervals, and the guardrails (DESIGN §7).

Users, not impressions, are the unit of randomisation (`assign_arm`), so the intervals resample
users: a heavy user's impressions move together. The bootstrap is a Poisson bootstrap (each user
gets an independent Poisson(1) weight per resample, within their arm), which is what lets every
resample be a matrix product over per-user sums instead of a loop over events. Each difference
gets a normal interval, the estimate +- 1.96 bootstrap standard errors (see `INTERVAL`).

Pure numpy/scipy/pyarrow; the caller passes one creation day's videos and the events of their
7-day windows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import sparse, stats

from vq_assets.core.labels.windows import WINDOW_DAYS

ARMS = ("control", "treatment")
# Where the split of a creation day lands: <lake>/landing/experiment_arms/dt=D/ (user_id, arm).
ARMS_TABLE = "experiment_arms"
# Which impressions of a new video count: those of its creation day (UTC), where the closed-loop
# simulator places a policy's cold starts, or its whole 7-day window.
SCOPES = ("cold_start", "window")
DAY_US = 86_400_000_000
# The interval method, as written beside every difference.
INTERVAL = "95% normal interval, standard error from a user-level Poisson bootstrap"
Z95 = 1.959963984540054
SKIP_SECONDS = 3.0  # the labels' skip: a play under 3 s (DESIGN §4)
# Memory bound of one bootstrap chunk: resamples x max(users, videos) floats.
_CHUNK_CELLS = 20_000_000


def assign_arm(user_ids: Iterable[str], treatment_share: float, salt: str) -> np.ndarray:
    """The arm of each user: ``"treatment"`` when blake2b(salt:user_id) as a uniform number in
    [0, 1) is below ``treatment_share``, else ``"control"``. Stable across runs, machines and
    days (no RNG state), independent between experiments with different salts, and a user keeps
    their arm for the whole experiment: the split the closed-loop simulator uses."""
    if not 0.0 <= treatment_share <= 1.0:
        raise ValueError(f"treatment_share must be in [0, 1], got {treatment_share}")
    prefix = f"{salt}:".encode()
    u = np.array(
        [
            int.from_bytes(hashlib.blake2b(prefix + str(x).encode(), digest_size=8).digest())
            / 2.0**64
            for x in user_ids
        ],
        dtype=np.float64,
    )
    return np.where(u < treatment_share, ARMS[1], ARMS[0])


def day_tables(con: duckdb.DuckDBPyConnection, flagged: Iterable[str]) -> tuple[pa.Table, pa.Table]:
    """(videos, events) for ``evaluate_experiment`` from DuckDB views ``videos`` (one creation
    day's), ``events`` (watch events of its window days) and ``arms`` (user_id, arm): the day's
    videos with ``flagged`` set for the ids given, and the events of users with an arm on those
    videos inside their windows. Users without an arm are not in the experiment; only these
    rows reach Python, not the window days' whole traffic."""
    con.register("flagged_ids", pa.table({"video_id": pa.array(sorted(set(flagged)), pa.string())}))
    videos = con.sql(
        """SELECT v.video_id, v.creator_id, v.created_at, v.duration_s,
                  f.video_id IS NOT NULL AS flagged
           FROM videos v LEFT JOIN flagged_ids f ON f.video_id = v.video_id
           ORDER BY v.video_id"""
    ).to_arrow_table()
    events = con.sql(
        f"""SELECT e.user_id, e.video_id, e.event_ts, e.watch_time_s, e.liked, e.commented, a.arm
            FROM events e
            JOIN videos v ON v.video_id = e.video_id
            JOIN (SELECT DISTINCT user_id, arm FROM arms) a ON a.user_id = e.user_id
            WHERE e.event_ts >= v.created_at
              AND e.event_ts < v.created_at + INTERVAL {WINDOW_DAYS} DAY"""
    ).to_arrow_table()
    con.unregister("flagged_ids")
    return videos, events


@dataclass(frozen=True)
class Guardrails:
    """How far treatment may be worse than control (point estimates, absolute units)."""

    skip_rate_max_rise: float = 0.005
    gini_max_rise: float = 0.02
    coverage_max_fall: float = 0.02
    # Share of impressions on flagged videos; a treatment with none always passes.
    flagged_exposure_max_rise: float = 0.0
    discoverable_max_fall: float = 0.02


@dataclass(frozen=True)
class Difference:
    metric: str
    control: float
    treatment: float
    difference: float  # treatment - control
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class GuardrailResult:
    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class ExperimentResult:
    differences: list[Difference]
    guardrails: list[GuardrailResult]
    users: dict[str, int]
    impressions: dict[str, int]
    resamples: int
    scope: str = "window"
    interval: str = field(default=INTERVAL)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.guardrails)

    def table(self) -> pa.Table:
        """One row per metric: both arms, the difference and its interval."""
        rows = [
            {"scope": self.scope} | d.__dict__ | {"interval": self.interval}
            for d in self.differences
        ]
        return pa.Table.from_pylist(rows)


def _codes(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _bool(table: pa.Table, name: str) -> np.ndarray:
    """A nullable bool column as 0/1 (null = false: a flag nobody set)."""
    if name not in table.column_names:
        return np.zeros(table.num_rows)
    return pc.fill_null(table[name].cast(pa.bool_()), False).to_numpy(zero_copy_only=False) * 1.0


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def _user_arms(events: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user code per event, arm code per user, the events' users' arm shares)."""
    arm_values = set(pc.unique(events["arm"]).to_pylist())
    if not arm_values <= set(ARMS):
        raise ValueError(f"arm must be one of {list(ARMS)}, found {sorted(map(str, arm_values))}")
    users, names = _codes(events["user_id"])
    arm = (events["arm"].to_numpy(zero_copy_only=False) == ARMS[1]).astype(np.int64)
    n_in = np.bincount(users, weights=arm, minlength=len(names))
    n_all = np.bincount(users, minlength=len(names))
    split = (n_in > 0) & (n_in < n_all)
    if split.any():
        raise ValueError(
            f"{int(split.sum())} users appear in both arms, e.g. "
            f"{names.take(np.flatnonzero(split)[:3]).to_pylist()}; arms are assigned per user"
        )
    user_arm = (n_in > 0).astype(np.int64)
    shares = np.bincount(user_arm, minlength=2) / max(len(names), 1)
    return users, user_arm, shares


@dataclass(frozen=True)
class _Arm:
    sums: np.ndarray  # [users, 5]: impressions, watch time, skips, full watches, engagements
    plays: sparse.csr_matrix  # [support, users] impressions of the videos the arm showed
    support: np.ndarray  # the day-video index of each row of plays (others have 0 plays)
    share: float  # of the population, to compare arms of unequal size at the same N plays


def _arms(
    events: pa.Table, videos: pa.Table, window_days: int, scope: str
) -> tuple[list[_Arm], bool]:
    """Per arm, the per-user sums and plays of the day's videos inside their windows (or their
    creation days: `scope`); and whether the events carry engagement flags at all."""
    users, user_arm, shares = _user_arms(events)
    vidx = pc.fill_null(pc.index_in(events["video_id"], value_set=videos["video_id"]), -1)
    vidx = vidx.to_numpy(zero_copy_only=False).astype(np.int64)
    ts = _micros(events["event_ts"])
    created = _micros(videos["created_at"])
    on_day = vidx >= 0
    start = np.where(on_day, created[np.maximum(vidx, 0)], 0)
    end = start + window_days * DAY_US if scope == "window" else (start // DAY_US + 1) * DAY_US
    keep = on_day & (ts >= start) & (ts < end)
    watch = events["watch_time_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    duration = videos["duration_s"].to_numpy(zero_copy_only=False).astype(np.float64)
    engaged = _bool(events, "liked") + _bool(events, "commented")
    flags_known = any(
        c in events.column_names and events[c].null_count < events.num_rows
        for c in ("liked", "commented")
    )
    values = np.stack(
        [
            np.ones(events.num_rows),
            watch,
            (watch < SKIP_SECONDS) * 1.0,
            (watch >= duration[np.maximum(vidx, 0)]) * 1.0,
            engaged,
        ],
        axis=1,
    )
    out = []
    for a in range(2):
        members = np.flatnonzero(user_arm == a)
        local = np.full(user_arm.size, -1)
        local[members] = np.arange(members.size)
        rows = keep & (user_arm[users] == a)
        u = local[users[rows]]
        sums = np.stack(
            [np.bincount(u, values[rows, k], members.size) for k in range(values.shape[1])], 1
        )
        # Only videos the arm showed can have plays in a resample: the bootstrap works on them.
        support, row = np.unique(vidx[rows], return_inverse=True)
        plays = sparse.csr_matrix(
            (np.ones(u.size, np.float32), (row, u)), shape=(support.size, members.size)
        )
        out.append(_Arm(sums, plays, support, float(shares[a])))
    return out, flags_known


def gini(x: np.ndarray, zeros: int = 0) -> np.ndarray:
    """Gini coefficient of each row of non-negative ``x`` ([b, n] or [n]) together with
    ``zeros`` more entries of 0 per row: 0 = equal exposure, (n-1)/n = all on one video; NaN
    for a row of zeros."""
    x = np.sort(np.atleast_2d(np.asarray(x, dtype=np.float64)), axis=1)
    n = x.shape[1] + zeros
    total = x.sum(axis=1)
    i = np.arange(zeros + 1, n + 1)  # the zeros take ranks 1..zeros
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * (x @ i) / (n * total) - (n + 1.0) / n, np.nan)


def _poisson1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) bootstrap weights, float32: 16 random bits per weight mapped through the
    Poisson(1) quantile table (a CDF resolution of 2^-16), several times faster than
    ``rng.poisson`` at the ~10^8 draws of 1000 resamples of ~10^5 users."""
    u = (np.arange(65536) + 0.5) / 65536
    table = stats.poisson.ppf(u, 1.0).astype(np.float32)
    bits = np.frombuffer(rng.bytes(2 * shape[0] * shape[1]), dtype=np.uint16)
    return table[bits].reshape(shape)


@dataclass(frozen=True)
class _Day:
    """What the metrics need to know about the day's videos."""

    creators: sparse.csr_matrix  # [videos, (creation day, creator)] one-hot
    flagged: np.ndarray  # [videos] 0/1
    n_plays: int  # the discoverable-corpus threshold
    flags_known: bool


def _metrics(sums: np.ndarray, plays: np.ndarray, arm: _Arm, day: _Day) -> dict[str, np.ndarray]:
    """Each metric per row: ``sums`` [b, 5] user sums, ``plays`` [b, support] impressions."""
    imp = sums[:, 0]
    n_videos, n_creators = day.creators.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = {
            "watch_time_per_impression": sums[:, 1] / imp,
            "skip_rate": sums[:, 2] / imp,
            "full_watch_rate": sums[:, 3] / imp,
            "engagement_rate": sums[:, 4] / imp if day.flags_known else np.full(imp.shape, np.nan),
            "flagged_exposure": (plays @ day.flagged[arm.support]) / plays.sum(axis=1),
        }
    seen = (plays > 0).astype(np.float32)
    covered = np.asarray((day.creators[arm.support].T @ seen.T).T > 0).sum(axis=1)
    # An arm with a share s of the users sees about s of a video's plays, so it needs
    # round(N * s) of them. Rounded, not N * s itself: arms of 50.03% and 49.97% must both need
    # round(5.0) plays, not 6 and 5 (an integer count against a fractional bar).
    needed = max(1, round(day.n_plays * arm.share))
    found = (plays >= needed).sum(axis=1)
    return rate | {
        "discoverable_corpus": found / n_videos if n_videos else np.full(imp.shape, np.nan),
        "creator_coverage": covered / n_creators if n_creators else np.full(imp.shape, np.nan),
        "exposure_gini": gini(plays, n_videos - arm.support.size),
    }


def evaluate_experiment(
    events: pa.Table,
    videos: pa.Table,
    *,
    discoverable_plays: int = 10,
    guardrails: Guardrails | None = None,
    resamples: int = 1000,
    seed: int = 0,
    window_days: int = WINDOW_DAYS,
    scope: str = "window",
) -> ExperimentResult:
    """Per arm, on the day's new ``videos`` (video_id, creator_id, created_at, duration_s,
    optional flagged) and the ``events`` (user_id, video_id, event_ts, watch_time_s, arm,
    optional liked/commented) of their windows [created_at, + window_days):

    - watch time per impression, skip rate (< 3 s), full-watch rate (>= duration), engagement
      rate ((likes + comments) / impressions; NaN when no event carries either flag);
    - discoverable corpus: share of the day's videos with >= ``discoverable_plays`` plays
      within their window, counted as plays in the arm >= round(N * the arm's share of users)
      (arms of unequal size are compared as if each had everyone);
    - creator coverage: share of the day's creators with any impression on a new video (over
      several creation days, of the (day, creator) pairs: the days' coverages pooled);
    - exposure Gini over the day's videos (zero-exposure videos included);
    - flagged exposure: share of impressions on flagged videos.

    Every difference (treatment - control) gets a 95% normal interval, the estimate +- 1.96
    standard errors, the error from ``resamples`` Poisson-bootstrap draws of users within each
    arm (seeded); NaN without resamples. Events outside the day's videos
    or their windows are ignored; arm shares count every user of ``events``. ``scope``
    "cold_start" counts only the impressions of each video's creation day (see `SCOPES`).
    Raises ValueError for an unknown arm or scope, or a user in both arms.
    """
    if discoverable_plays < 1:
        raise ValueError(f"discoverable_plays must be >= 1, got {discoverable_plays}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    guardrails = guardrails or Guardrails()
    arms, flags_known = _arms(events, videos, window_days, scope)
    day_of = pc.cast(pc.floor_temporal(videos["created_at"], unit="day"), pa.string())
    codes, names = _codes(pc.binary_join_element_wise(day_of, videos["creator_id"], "|"))
    creators = sparse.csr_matrix(
        (np.ones(codes.size, np.float32), (np.arange(codes.size), codes)),
        shape=(codes.size, len(names)),
    )
    day = _Day(creators, _bool(videos, "flagged"), discoverable_plays, flags_known)

    def metrics(arm: _Arm, w: np.ndarray | None) -> dict[str, np.ndarray]:
        """Metrics of the arm with user weights ``w`` [b, users] (None: every weight 1)."""
        if w is None:
            return _metrics(
                arm.sums.sum(0, keepdims=True), np.asarray(arm.plays.sum(1)).T, arm, day
            )
        return _metrics(w @ arm.sums, np.asarray(arm.plays @ w.T).T, arm, day)

    point = [{k: float(v[0]) for k, v in metrics(a, None).items()} for a in arms]
    rng = np.random.default_rng(seed)
    width = max(*(a.sums.shape[0] for a in arms), *(a.support.size for a in arms), 1)
    chunk = max(1, min(resamples, _CHUNK_CELLS // width))
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point[0]}
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        control, treatment = (metrics(a, _poisson1(rng, (b, a.sums.shape[0]))) for a in arms)
        for k in draws:
            draws[k].append(treatment[k] - control[k])
    differences = []
    for k in point[0]:
        diff = point[1][k] - point[0][k]
        # A normal interval around the point estimate with the bootstrap's standard error, not
        # bootstrap percentiles: resampling users inflates each video's play-count variance, so
        # threshold metrics (discoverable corpus, coverage) are biased in the resamples, and
        # percentiles would be centred off the estimate.
        d = np.concatenate(draws[k]) if resamples else np.zeros(0)
        d = d[np.isfinite(d)]
        se = float(d.std(ddof=1)) if d.size > 1 else math.nan
        differences.append(
            Difference(k, point[0][k], point[1][k], diff, diff - Z95 * se, diff + Z95 * se)
        )
    return ExperimentResult(
        differences=differences,
        guardrails=check_guardrails({d.metric: d for d in differences}, guardrails, scope),
        users={arm: a.sums.shape[0] for arm, a in zip(ARMS, arms, strict=True)},
        impressions={arm: int(a.sums[:, 0].sum()) for arm, a in zip(ARMS, arms, strict=True)},
        resamples=resamples,
        scope=scope,
    )


# The guardrails each scope answers for: what the policy places (skips, concentration and
# creator coverage of the cold starts) and what a new video gets of its week (its skips and
# whether it reaches N plays); flagged videos in both.
SCOPE_GUARDRAILS = {
    "cold_start": ("skip_rate", "exposure_concentration", "creator_coverage", "flagged_exposure"),
    "window": ("skip_rate", "discoverable_corpus", "flagged_exposure"),
}


def check_guardrails(
    differences: Mapping[str, Difference], tolerances: Guardrails, scope: str | None = None
) -> list[GuardrailResult]:
    """Pass/fail per guardrail (those of `scope`, all without one) on the point estimate of
    treatment - control, with the reason (and the interval, so a reader sees whether the
    regression is beyond noise). A guardrail that cannot be measured (an arm without
    impressions) fails: it protects nothing."""
    rules = [
        ("skip_rate", "skip_rate", +1, tolerances.skip_rate_max_rise, "rise"),
        ("exposure_concentration", "exposure_gini", +1, tolerances.gini_max_rise, "rise"),
        ("creator_coverage", "creator_coverage", -1, tolerances.coverage_max_fall, "fall"),
        ("flagged_exposure", "flagged_exposure", +1, tolerances.flagged_exposure_max_rise, "rise"),
        (
            "discoverable_corpus",
            "discoverable_corpus",
            -1,
            tolerances.discoverable_max_fall,
            "fall",
        ),
    ]
    if scope is not None:
        rules = [r for r in rules if r[0] in SCOPE_GUARDRAILS[scope]]
    out = []
    for name, metric, sign, tolerance, verb in rules:
        d = differences[metric]
        seen = (
            f"{metric}: treatment {d.treatment:.4g} vs control {d.control:.4g}, "
            f"difference {d.difference:+.4g} [{d.ci_low:+.4g}, {d.ci_high:+.4g}]"
        )
        if metric == "flagged_exposure" and d.treatment == 0.0:
            out.append(GuardrailResult(name, True, f"{seen}; treatment shows no flagged video"))
        elif not math.isfinite(d.difference):
            out.append(GuardrailResult(name, False, f"{seen}; cannot be measured"))
        else:
            passed = sign * d.difference <= tolerance
            limit = f"may {verb} by at most {tolerance:.4g}"
            verdict = "within tolerance" if passed else "REGRESSED beyond tolerance"
            out.append(GuardrailResult(name, passed, f"{seen}; {limit}: {verdict}"))
    return out
