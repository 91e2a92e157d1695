"""`vq experiment`: a closed-loop A/B of the flywheel on a simulated world, end to end through
the Dagster jobs (DESIGN §7).

Each day D, in order: land D's videos; at a week start, retrain (the training set and the
model through its promotion gate; no evaluation and no CDML tower, which play no part in the
flywheel: `vq run` makes them); D's chain up to its scores and flywheel weights (with the
configured policy, e.g. Thompson sampling); land D's plays, each arm's cold starts placed by its
policy, the treatment's from the weights just materialised (`ClosedLoop.land_events`); D's
event assets; then the labels of D-7 and, for an A/B day, its `flywheel_experiment`. Days
before the first promoted model are the warm-up: cold starts uniform, no arms. The A/B runs for
`ab_days` creation days from the first scored day, and the world runs 7 more days (without
retraining) so that their windows close. Like `Replay`, every step is a run on the instance
(the UI shows it) and an interrupted run resumes.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from vq_assets.core.labels.windows import WINDOW_DAYS, shift
from vq_assets.core.lake.store import Lake
from vq_assets.core.serving import experiment_report
from vq_assets.core.serving.experiment import ARMS
from vq_assets.core.sources.simulator.closed_loop import (
    ClosedLoop,
    Policy,
    uniform_policy,
    weights_policy,
)
from vq_assets.defs.automation import EVENT_ASSETS, FEATURE_ASSETS, RETRAIN_ASSETS
from vq_assets.replay import Replay, ReplayError, clock, reclaim_dead_runs

EXPERIMENT_ASSETS = ["flywheel_experiment"]
# Days the warm-up may take before a promoted model scores: beyond, something is wrong.
MAX_WARMUP_DAYS = 60


def policy_named(name: str, lake: Lake) -> Policy:
    """`uniform`, `vq` (the lake's flywheel_sampling_weights of the day), or a folder of the
    lake (`relative/path`, holding dt=D/*.parquet of video_id, sampling_weight)."""
    if name == "uniform":
        return uniform_policy
    if name == "vq":
        return weights_policy(lake)
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"policy {name!r}: uniform, vq, or a folder inside the lake")
    return weights_policy(lake, *parts)


@dataclass(frozen=True)
class Plan:
    ab_days: int = 28
    control: str = "uniform"
    treatment: str = "vq"


class ExperimentReplay(Replay):
    """`Replay` with the world in the loop: its days land as the chain needs them."""

    def __init__(self, *args, world: ClosedLoop, plan: Plan, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The model through its promotion gate is what scores; its weekly evaluation (ablations,
        # baselines: most of a retrain's time) and the CDML tower (minutes a week) play no part
        # in the flywheel: `vq run`'s business.
        self.retrain_assets = [a for a in RETRAIN_ASSETS if a != "model_evaluation"]
        self.cdml = False
        self.world, self.plan = world, plan
        self.policies = {
            arm: policy_named(name, self.lake)
            for arm, name in zip(ARMS, (plan.control, plan.treatment), strict=True)
        }
        self.ab_days: list[str] = []

    def loop_day(self, day: str) -> None:
        date = dt.date.fromisoformat(day)
        landed = self.lake.day_complete("videos", day)
        if not landed:
            self.world.land_videos(date)
        if len(self.ab_days) < self.plan.ab_days:  # a model trained later would score no A/B day
            self.week(day)
        self.chain(day, [a for a in FEATURE_ASSETS if a not in EVENT_ASSETS])
        ab = len(self.ab_days) < self.plan.ab_days and self.scoring(day)
        if ab:
            self.ab_days.append(day)
        if not (landed and self.lake.day_complete("watch_events", day)):
            self.world.land_events(date, self.policies if ab else None)
            self._steps.append("A/B day landed" if ab else "landed, uniform cold starts")
        self._run("daily_chain", day, EVENT_ASSETS)
        closed = shift(day, -WINDOW_DAYS)
        self.close(closed)
        if closed in self.ab_days:
            # A guardrail that fails is the experiment's finding, reported at the end.
            self._run("experiment", closed, EXPERIMENT_ASSETS, checks_may_fail=True)

    def run_loop(self, start: str) -> list[str]:
        """Run from `start` until the last A/B day's window has closed; the A/B days."""
        for run_id in reclaim_dead_runs(self.instance):
            self.log(f"  reclaimed run {run_id}: its process was gone; marked failed, slots freed")
        t0, day, i = time.monotonic(), start, 0
        while not self.ab_days or shift(self.ab_days[-1], WINDOW_DAYS) >= day:
            if not self.ab_days and i >= MAX_WARMUP_DAYS:
                raise ReplayError(
                    f"no promoted model after {i} days from {start}: the A/B never started"
                )
            self._steps = []
            self.loop_day(day)
            i += 1
            phase = (
                f"A/B day {len(self.ab_days)}/{self.plan.ab_days}"
                if day in self.ab_days
                else ("warm-up" if not self.ab_days else "closing windows")
            )
            self.log(
                f"day {day} ({phase}) {', '.join(self._steps) or 'nothing to do'}  "
                f"(elapsed {clock(time.monotonic() - t0)})"
            )
            day = shift(day, 1)
        return self.ab_days


def report(lake: Lake, ab_days: list[str], **options) -> tuple[str, bool]:
    """The pooled A/B over `ab_days` as text, and whether every guardrail held."""
    event_days = [shift(ab_days[0], k) for k in range(len(ab_days) + WINDOW_DAYS)]
    pooled = experiment_report.evaluate_days(lake, ab_days, event_days, **options)
    first = pooled.results["cold_start"]
    lines = [
        f"flywheel A/B over {len(ab_days)} creation days {ab_days[0]}..{ab_days[-1]}: "
        f"users {first.users}, cold-start impressions {first.impressions}",
        f"({first.interval}, {first.resamples} resamples)",
        "",
        experiment_report.markdown(pooled.table()),
        "",
        "guardrails:",
    ]
    for scope, result in pooled.results.items():
        for g in result.guardrails:
            lines.append(f"  [{'pass' if g.passed else 'FAIL'}] {scope} {g.name}: {g.reason}")
    return "\n".join(lines), pooled.passed
