"""Flywheel sampling weights from a day's quality predictions (DESIGN.md §6, §7).

Pure numpy/pyarrow, one creation day at a time:

1. `quality_score`: a composite score per video from the task predictions (natural units),
   each task standardised within the day, then combined with the tasks' flywheel weights.
2. `percentile_within_day`: the score's percentile in [0, 1] within the day.
3. `exclusions`: the guardrail mask (flag column + an exclusion list of video ids).
4. `sampling_weights`: softmax(score / T), mixed with an exploration floor ε, then a per-creator
   cap on total mass; excluded videos get exactly 0. Sums to 1. The scores it is given depend
   on the policy (`policy_scores`): the quality score itself ("exp"), or one Thompson draw
   from the ensemble's spread of it (`quality_score_sd`), seeded by the day ("thompson").
5. `flywheel_lift`: once labels exist, how much the weights would have changed the realised skip
   rate / watch time of a sampled video compared with uniform sampling.

Everything here is "within the day": callers pass the rows of exactly one partition, because the
z-scores, percentiles and weights are relative to the other videos of that day.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vq_assets.core.lake.store import Lake
from vq_assets.core.model import tasks

ArrayLike = np.ndarray | pa.Array | pa.ChunkedArray | Sequence


@dataclass(frozen=True)
class _Term:
    """One task's share of the quality score: ``coef * (ranked(x) - mean) / std``."""

    task: tasks.Task
    coef: float
    mean: float
    std: float  # 0 for a constant or all-non-finite column: the task then contributes 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The term for predictions ``x`` (any shape); a non-finite prediction gives 0."""
        r = self.task.behaviour.ranked(np.asarray(x, dtype=np.float64))
        ok = np.isfinite(r)
        if self.std == 0.0:
            return np.zeros(r.shape)
        return np.where(ok, self.coef * (np.where(ok, r, self.mean) - self.mean) / self.std, 0.0)


def _terms(
    preds: Mapping[str, np.ndarray], weights: Mapping[str, float] | None
) -> tuple[int, list[_Term]]:
    """(videos, per-task terms) of the quality score: the day's z-scoring, fixed by ``preds``."""
    weights = tasks.flywheel_weights(dict(weights or {}))
    missing = [t.prediction for t in tasks.catalogue() if t.prediction not in preds]
    if missing:
        raise KeyError(f"quality_score: missing prediction columns {missing}")
    cols = {t: np.asarray(preds[t.prediction], dtype=np.float64) for t in tasks.catalogue()}
    shapes = {c.shape for c in cols.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"quality_score: columns must be 1-d of one length, got {shapes}")
    n = next(iter(shapes))[0]
    present = {t: x for t, x in cols.items() if n == 0 or np.isfinite(x).any()}
    total = sum(abs(weights[t.name]) for t in cols)
    kept = sum(abs(weights[t.name]) for t in present)
    rescale = total / kept if kept > 0 else 0.0
    terms = []
    for task, x in present.items():
        v = task.behaviour.ranked(x)
        v = v[np.isfinite(v)]
        # ptp, not a std threshold: identical values can leave a ~1e-17 std that would blow up.
        constant = v.size == 0 or np.ptp(v) == 0.0
        mean, std = (0.0, 0.0) if constant else (float(v.mean()), float(v.std()))
        terms.append(_Term(task, rescale * weights[task.name], mean, std))
    return n, terms


def quality_score(
    preds: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
) -> np.ndarray:
    """Composite quality score per video of one day (higher = better).

    ``preds`` holds every catalogue task's prediction column (``pred_skips``, ...) in natural
    units; a column that is entirely null is a task the model does not have (its source keeps
    no such label). ``weights`` maps task names to their weight (default: each task's
    ``flywheel_weight``; see ``tasks.flywheel_weights``); the weights of the tasks the model
    has are rescaled to the same total absolute weight, so the score keeps its scale when a
    task is missing. Each prediction is put on its kind's scale (log1p for counts and times),
    z-scored within the day; the score is ``sum(weight * z)``. A constant column contributes 0,
    and so does a non-finite prediction (the video counts as average on that task), so the
    score is always finite. The score is relative to the day: don't compare it across days
    (use the percentile or the raw predictions for that).
    """
    n, terms = _terms(preds, weights)
    score = np.zeros(n, dtype=np.float64)
    for term in terms:
        score += term(preds[term.task.prediction])
    return score


def quality_score_sd(
    preds: Mapping[str, np.ndarray],
    member_preds: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The model's predictive spread of each video's quality score: the standard deviation
    (ddof=1) over the ensemble members of the score each member's predictions would get.

    Computed the same way as ``quality_score``: each member's prediction is put on the task's
    scale and z-scored with the *day's* mean and std of the ensemble's predictions (``preds``),
    so a member's score is on the ensemble score's scale and the sd is in score units.
    ``member_preds`` maps a prediction column to ``[n, members]``; a task it lacks, or whose
    weight is 0, adds no spread. All NaN for a single-member model, which has no disagreement
    to measure (``FlywheelConfig.fallback_sd`` then stands in for it).
    """
    n, terms = _terms(preds, weights)
    widths = {np.asarray(m).shape[1:] for m in member_preds.values()}
    if len(widths) > 1 or any(len(w) != 1 for w in widths):
        raise ValueError(f"quality_score_sd: member columns must be [n, members], got {widths}")
    members = next(iter(widths))[0] if widths else 1
    if members < 2:
        return np.full(n, np.nan)
    scores = np.zeros((n, members), dtype=np.float64)
    for term in terms:
        if term.coef and term.task.prediction in member_preds:
            scores += term(member_preds[term.task.prediction])
    return scores.std(axis=1, ddof=1)


def percentile_within_day(scores: np.ndarray) -> np.ndarray:
    """Percentile of each score within the day, in [0, 1]: (average rank - 1) / (n - 1).

    Ties share their average rank. A day of one video gets 0.5, consistent with "all tied"
    (n tied videos all get 0.5). Non-finite scores get NaN and are not ranked.
    """
    s = np.asarray(scores, dtype=np.float64)
    out = np.full(s.shape, np.nan)
    ok = np.isfinite(s)
    n = int(ok.sum())
    if n == 0:
        return out
    if n == 1:
        out[ok] = 0.5
        return out
    _, inv, counts = np.unique(s[ok], return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    out[ok] = (avg_rank[inv] - 1.0) / (n - 1)
    return out


def exclusions(
    video_ids: ArrayLike,
    flagged_column: ArrayLike | None,
    exclusion_list: Iterable[str],
) -> np.ndarray:
    """Guardrail mask: True where a video must get no sampling weight.

    A video is excluded when its flag is true (null/NaN = not flagged) or its id is in
    ``exclusion_list``.
    """
    ids = video_ids if isinstance(video_ids, pa.Array | pa.ChunkedArray) else pa.array(video_ids)
    value_set = pa.array(sorted(set(exclusion_list)), type=pa.string()).cast(ids.type)
    listed = pc.fill_null(pc.is_in(ids, value_set=value_set), False)
    out = listed.to_numpy(zero_copy_only=False).astype(bool)
    if flagged_column is not None:
        flags = flagged_column
        if not isinstance(flags, pa.Array | pa.ChunkedArray):
            flags = pa.array(flags, from_pandas=True)  # from_pandas: NaN/None -> null
        flagged = pc.fill_null(flags.cast(pa.bool_()), False).to_numpy(zero_copy_only=False)
        if len(flagged) != len(out):
            raise ValueError(f"exclusions: {len(flagged)} flags for {len(out)} videos")
        out |= flagged.astype(bool)
    return out


def flagged_ids(lake: Lake, days: Iterable[str]) -> set[str]:
    """Ids of videos flagged true in `<lake>/landing/video_flags/dt=D/*.parquet` (columns
    video_id, flagged) over `days`: the guardrail list of a serving step."""
    out: set[str] = set()
    for day in days:
        for f in lake.list_files(lake.landing_dir("video_flags", day)):
            flags = lake.read_table(f, ["video_id", "flagged"])
            keep = pc.fill_null(flags.column("flagged").cast(pa.bool_()), False)
            out.update(flags.column("video_id").filter(keep).to_pylist())
    return out


@dataclass(frozen=True)
class WeightsReport:
    """What `sampling_weights` did, for the asset's metadata."""

    n_videos: int
    n_excluded: int
    n_creators: int  # creators with at least one eligible video
    n_creators_capped: int  # creators sitting at cap_used (all of them when relaxed)
    cap_requested: float
    cap_used: float  # = 1 / n_creators when cap_requested was infeasible
    cap_relaxed: bool
    max_weight: float
    effective_sample_size: float  # 1 / sum(w^2): n_eligible for uniform, 1 for a point mass
    entropy: float  # nats, over the non-zero weights; log(n_eligible) for uniform


def _factorize(ids: ArrayLike) -> np.ndarray:
    """Integer code per creator id; a null id is an error (the contract requires creator_id)."""
    arr = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(ids, from_pandas=True)
    if arr.null_count:
        raise ValueError(f"sampling_weights: {arr.null_count} null creator_id(s)")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _cap_creators(mass: np.ndarray, cap: float) -> np.ndarray:
    """Water-filling: creator masses (sum 1) -> capped masses (sum 1, each <= cap).

    The fixed point of "cap every creator above `cap`, hand the excess to the uncapped creators
    in proportion to their mass, repeat": the capped masses are min(mass * s, cap) for the one
    s >= 1 that makes them sum to 1. Solved exactly by sorting instead of iterating (iterating
    can take one round per creator). Needs (#creators with mass > 0) * cap >= 1.
    """
    order = np.argsort(-mass, kind="stable")
    m = mass[order][: int((mass > 0).sum())]  # zero-mass creators can't absorb anything
    tail = np.cumsum(m[::-1])[::-1]  # tail[i] = sum(m[i:]), summed small-to-large
    i = np.arange(m.size)
    # f(b_i) where b_i = cap / m[i] is the scale at which creator i reaches the cap:
    # creators 0..i-1 sit at the cap, creators i.. are at m * b_i.
    f_at_breaks = i * cap + cap / m * tail
    # The first breakpoint where f reaches 1: exactly creators 0..j-1 are capped.
    reached = np.nonzero(f_at_breaks >= 1.0)[0]
    j = int(reached[0]) if reached.size else m.size - 1  # last: float rounding of k*cap == 1
    s = (1.0 - j * cap) / tail[j]
    capped = np.zeros(mass.size)
    capped[: m.size] = np.where(i < j, cap, m * s)
    out = np.empty_like(mass)
    out[order] = capped
    return out


def sampling_weights(
    scores: np.ndarray,
    creator_ids: ArrayLike,
    *,
    temperature: float = 1.0,
    epsilon: float = 0.05,
    creator_cap: float = 0.05,
    excluded: np.ndarray | None = None,
) -> tuple[np.ndarray, WeightsReport]:
    """Sampling weights for one day's videos (DESIGN.md §7) and a report.

    ``w = (1 - ε) * softmax(score / T) + ε / n_eligible`` over the eligible (not excluded)
    videos, then each creator's total is capped at ``creator_cap`` and the excess is handed to
    the uncapped creators in proportion to their mass (water-filling, to a fixed point). Within a
    capped creator every video is scaled by the same factor, so its ranking is kept.

    Guarantees: sum(w) == 1 (to 1e-12); excluded videos get exactly 0; every creator's mass is
    <= cap_used; an eligible video gets >= ε / n_eligible if its creator's pre-cap total was
    <= cap_used (redistribution only scales such creators up), and >= ε * cap_used / n_eligible
    in any case (a cut creator keeps cap_used of mass, shared in proportion to pre-cap weights,
    each of which was >= ε / n_eligible). When fewer
    than 1 / creator_cap creators are eligible the cap cannot hold; it is relaxed to
    1 / n_creators (every creator then gets exactly that) and the report says so.

    Raises ValueError when every video is excluded, a score of an eligible video is not finite,
    or (only possible with epsilon == 0) the softmax underflows so that too few creators have
    any mass to absorb what the cap removes.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    codes = _factorize(creator_ids)
    if s.ndim != 1 or codes.size != n:
        raise ValueError(
            f"sampling_weights: {codes.size} creator ids for scores of shape {s.shape}"
        )
    if not temperature > 0:  # also rejects NaN
        raise ValueError(f"sampling_weights: temperature must be > 0, got {temperature}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"sampling_weights: epsilon must be in [0, 1], got {epsilon}")
    if not 0.0 < creator_cap <= 1.0:
        raise ValueError(f"sampling_weights: creator_cap must be in (0, 1], got {creator_cap}")
    excl = np.zeros(n, dtype=bool) if excluded is None else np.asarray(excluded, dtype=bool)
    if excl.shape != s.shape:
        raise ValueError(f"sampling_weights: excluded has shape {excl.shape}, scores {s.shape}")
    elig = ~excl
    n_elig = int(elig.sum())
    if n_elig == 0:
        raise ValueError(f"sampling_weights: all {n} videos are excluded; nothing to sample")
    if not np.isfinite(s[elig]).all():
        raise ValueError("sampling_weights: non-finite score for an eligible video")

    # Stable softmax: subtracting the max keeps exp() <= 1; T = inf gives exactly uniform.
    logits = s[elig] / temperature
    soft = np.exp(logits - logits.max())
    soft /= soft.sum()
    p = (1.0 - epsilon) * soft + epsilon / n_elig

    # Per-creator cap on the eligible videos' creators only.
    _, c = np.unique(codes[elig], return_inverse=True)
    n_creators = int(c.max()) + 1
    cap_relaxed = n_creators * creator_cap < 1.0
    cap = 1.0 / n_creators if cap_relaxed else creator_cap
    mass = np.bincount(c, weights=p, minlength=n_creators)
    if int((mass > 0).sum()) * cap < 1.0:
        raise ValueError(
            "sampling_weights: the softmax underflowed to 0 for too many creators to meet the "
            f"creator cap {cap}; raise epsilon above 0 or the temperature"
        )
    new_mass = _cap_creators(mass, cap)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(mass > 0, new_mass / mass, 0.0)
    p = p * factor[c]

    w = np.zeros(n, dtype=np.float64)
    w[elig] = p / p.sum()  # absorbs the last ulps of rounding
    nz = w[w > 0]
    report = WeightsReport(
        n_videos=n,
        n_excluded=n - n_elig,
        n_creators=n_creators,
        n_creators_capped=int((new_mass >= cap * (1 - 1e-9)).sum()),
        cap_requested=float(creator_cap),
        cap_used=float(cap),
        cap_relaxed=bool(cap_relaxed),
        max_weight=float(w.max()),
        effective_sample_size=float(1.0 / np.sum(w**2)),
        entropy=float(-np.sum(nz * np.log(nz))),
    )
    return w, report


POLICIES = ("exp", "thompson")


def day_seed(day: str, seed: int = 0) -> np.random.Generator:
    """The RNG of a partition: seeded by (seed, the day as YYYYMMDD), so a rerun of a day draws
    exactly what the first run drew, and two days draw independently."""
    return np.random.default_rng([seed, int(day.replace("-", ""))])


def policy_scores(
    policy: str,
    scores: np.ndarray,
    sd: np.ndarray | None,
    rng: np.random.Generator,
    fallback_sd: float,
) -> tuple[np.ndarray, dict[str, object]]:
    """The scores the day's weights are computed from, and what the policy did.

    ``exp``: the quality scores as they are (weights ∝ exp(score / T)). ``thompson``: one
    posterior draw per video, ``score + sd * N(0, 1)``, so a video the ensemble members
    disagree about sometimes draws high and gets explored; ``sampling_weights`` then applies
    the same softmax, floor, cap and guardrails. A video without a finite spread (a
    single-member model, scores written before the spread existed) uses ``fallback_sd``, in
    score units, and the report counts them.
    """
    s = np.asarray(scores, dtype=np.float64)
    if policy == "exp":
        return s, {"policy": "exp"}
    if policy != "thompson":
        raise ValueError(f"unknown flywheel policy {policy!r}; choose one of {list(POLICIES)}")
    if not fallback_sd >= 0:
        raise ValueError(f"fallback_sd must be >= 0, got {fallback_sd}")
    spread = np.full(s.shape, np.nan) if sd is None else np.asarray(sd, dtype=np.float64)
    if spread.shape != s.shape:
        raise ValueError(f"policy_scores: sd has shape {spread.shape}, scores {s.shape}")
    if (spread < 0).any():
        raise ValueError("policy_scores: a negative quality_score_sd")
    missing = ~np.isfinite(spread)
    spread = np.where(missing, fallback_sd, spread)
    drawn = s + spread * rng.standard_normal(s.size)
    return drawn, {
        "policy": "thompson",
        "videos_with_fallback_sd": int(missing.sum()),
        "fallback_sd": float(fallback_sd),
        "mean_sd": float(spread.mean()) if s.size else float("nan"),
    }


def validate_policy_weights(
    video_ids: Sequence[str], weights: ArrayLike, day_video_ids: Iterable[str]
) -> np.ndarray:
    """A policy given as a table of (video_id, weight) must be a distribution over the day's
    videos: raises ValueError naming the problem (duplicate ids, ids that are not the day's
    videos, NaN or negative weights, a sum off 1 by more than 1e-6). Returns the weights as
    float64. Day videos the table leaves out get no impressions; that is allowed."""
    ids = list(video_ids)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(ids),):
        raise ValueError(f"policy: {w.size} weights for {len(ids)} video ids")
    seen: set[str] = set()
    dupes = sorted({v for v in ids if v in seen or seen.add(v)})
    if dupes:
        raise ValueError(f"policy: duplicate video ids {dupes[:5]} ({len(dupes)} in all)")
    foreign = sorted(seen - set(day_video_ids))
    if foreign:
        raise ValueError(
            f"policy: {len(foreign)} video ids are not the day's videos, e.g. {foreign[:5]}"
        )
    if np.isnan(w).any():
        raise ValueError(f"policy: {int(np.isnan(w).sum())} NaN weight(s)")
    if (w < 0).any() or not np.isfinite(w).all():
        bad = int(((w < 0) | ~np.isfinite(w)).sum())
        raise ValueError(f"policy: {bad} negative or infinite weight(s)")
    total = float(w.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"policy: weights sum to {total!r}, not 1 (tolerance 1e-6)")
    return w


def _expectations(w: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(E_w[y], E_uniform[y], relative lift) with w renormalised over the given rows."""
    if y.size == 0:
        return math.nan, math.nan, math.nan
    weighted = float(np.sum(w * y) / np.sum(w)) if np.sum(w) > 0 else math.nan
    uniform = float(np.mean(y))
    lift = weighted / uniform - 1.0 if uniform != 0.0 else math.nan
    return weighted, uniform, lift


def flywheel_lift(
    weights: np.ndarray,
    realised_skip_rate: np.ndarray,
    realised_avg_watch_time: np.ndarray,
    plays: np.ndarray,
    *,
    excluded: np.ndarray | None = None,
) -> dict[str, float | int]:
    """What the weights would have done to the realised labels of a sampled video, vs uniform.

    Video-weighted on purpose: the retriever samples videos, so the quantity is "the skip rate of
    the video you draw" = sum_i w_i * skip_rate_i, against the mean over the same eligible
    videos (uniform sampling), not a play-weighted pooled rate. Eligible = not ``excluded``
    (default: weight > 0). Only eligible videos with plays > 0 and both labels non-null enter;
    the weights are renormalised over them (`videos_with_labels`; `weight_coverage` is the share
    of the weight mass they carry). ``*_lift`` = weighted / uniform - 1, e.g. -0.12 = the weights
    would have lowered the skip rate of sampled videos by 12%; NaN when it can't be computed.
    """
    w = np.asarray(weights, dtype=np.float64)
    cols = [
        np.asarray(a, dtype=np.float64)
        for a in (realised_skip_rate, realised_avg_watch_time, plays)
    ]
    if any(a.shape != w.shape for a in cols):
        raise ValueError("flywheel_lift: all inputs must have the shape of weights")
    skip, watch, n_plays = cols
    elig = (w > 0) if excluded is None else ~np.asarray(excluded, dtype=bool)
    # NaN plays compare False, so a null play count also counts as "no label".
    labelled = elig & (n_plays > 0) & np.isfinite(skip) & np.isfinite(watch)
    wl = w[labelled]
    total = float(w[elig].sum())
    skip_w, skip_u, skip_lift = _expectations(wl, skip[labelled])
    watch_w, watch_u, watch_lift = _expectations(wl, watch[labelled])
    return {
        "eligible_videos": int(elig.sum()),
        "videos_with_labels": int(labelled.sum()),
        "weight_coverage": float(wl.sum() / total) if total > 0 else math.nan,
        "skip_rate_weighted": skip_w,
        "skip_rate_uniform": skip_u,
        "skip_rate_lift": skip_lift,
        "avg_watch_time_s_weighted": watch_w,
        "avg_watch_time_s_uniform": watch_u,
        "avg_watch_time_s_lift": watch_lift,
    }
