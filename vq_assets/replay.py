"""Replaying history day by day through Dagster, point in time (DESIGN §2 "Time travel").

For each day D in order: at a week start, retrain (on labels closed before the week began); then
D's chain (ingest, partials, embeddings, creator features and, once a promoted model exists,
scores and weights); then the labels of D-7, whose window has just closed, and the flywheel lift
of that day. Every step is a run of the code location's own jobs on the given instance, so the
Dagster UI shows the replay; steps whose partitions are already materialized are skipped, so an
interrupted replay resumes where it stopped.
"""

import datetime as dt
import time
from collections.abc import Callable

import dagster as dg

from vq_assets.core.labels.windows import WINDOW_DAYS, shift
from vq_assets.core.model import registry
from vq_assets.core.model.features import label_days_for_week
from vq_assets.defs.automation import (
    FEATURE_ASSETS,
    LABEL_ASSETS,
    LIFT_ASSETS,
    RETRAIN_ASSETS,
    SCORING_ASSETS,
)
from vq_assets.partitions import START_DATE

# A week is retrained only when this many label days are complete at its start.
MIN_TRAIN_DAYS = 14


def _days(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


class Replay:
    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        lake,
        *,
        train_days: int,
        min_train_days: int = MIN_TRAIN_DAYS,
        log: Callable[[str], None] = print,
    ) -> None:
        self.defs, self.instance, self.lake, self.log = defs, instance, lake, log
        self.train_days, self.min_train_days = train_days, min_train_days
        self.runs = 0

    def _done(self, asset: str, partition: str) -> bool:
        return partition in self.instance.get_materialized_partitions(dg.AssetKey(asset))

    def _run(self, job: str, partition: str, assets: list[str]) -> None:
        todo = [a for a in assets if not self._done(a, partition)]
        if not todo:
            return
        started = time.monotonic()
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            partition_key=partition,
            asset_selection=[dg.AssetKey(a) for a in todo],
            raise_on_error=False,
            tags={"vq/replay": "true"},
        )
        self.runs += 1
        if not result.success:
            failures = [
                f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
                for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"
            ]
            raise RuntimeError(
                f"{job}[{partition}] failed (run {result.run_id}):\n" + "\n".join(failures)
            )
        self.log(f"  {job}[{partition}] {', '.join(todo)} in {time.monotonic() - started:.1f}s")

    def day(self, day: str) -> None:
        if dt.date.fromisoformat(day).weekday() == 6:  # Sunday: weekly partitions start here
            complete = label_days_for_week(day, self.train_days, START_DATE)
            if len(complete) >= self.min_train_days:
                self._run("retrain", day, RETRAIN_ASSETS)
            else:
                self.log(
                    f"  week {day}: {len(complete)} label days complete "
                    f"(< {self.min_train_days}), "
                    "no retraining yet"
                )
        scoring = SCORING_ASSETS if registry.production_as_of(self.lake, shift(day, 1)) else []
        self._run("daily_chain", day, FEATURE_ASSETS + scoring)
        closed = shift(day, -WINDOW_DAYS)
        if closed >= START_DATE:
            lift = LIFT_ASSETS if self._done("flywheel_sampling_weights", closed) else []
            self._run("labels", closed, LABEL_ASSETS + lift)

    def run(self, start: str, end: str) -> None:
        days = _days(start, end)
        t0 = time.monotonic()
        for i, day in enumerate(days, 1):
            self.log(f"day {day} ({i}/{len(days)})")
            self.day(day)
            rate = (time.monotonic() - t0) / i
            self.log(f"  {i}/{len(days)} days, ETA {rate * (len(days) - i):.0f}s")
