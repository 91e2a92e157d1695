"""Replaying history day by day through Dagster, point in time (DESIGN §2 "Time travel").

For each day D in order: at a week start, retrain (on labels closed before the week began); then
D's chain (ingest, partials, embeddings, creator features and, once a promoted model exists,
scores and weights; no events nor partials on a lake that keeps only daily rollups); then the
labels of D-7, whose window has just closed, and the flywheel lift of that day. Every step is a
run of the code location's own jobs on the given instance, so the Dagster UI shows the replay;
steps whose partitions are already materialized are skipped, so an interrupted replay resumes
where it stopped.
"""

import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psutil

from vq_assets.core.labels.source import events_landed
from vq_assets.core.labels.windows import WINDOW_DAYS, shift
from vq_assets.core.model import registry
from vq_assets.core.model.features import label_days_for_week
from vq_assets.core.related.week import tower_week_as_of
from vq_assets.defs.automation import (
    CDML_ASSETS,
    LABEL_ASSETS,
    LIFT_ASSETS,
    RELATED_ASSETS,
    RETRAIN_ASSETS,
    SCORING_ASSETS,
    feature_assets,
)
from vq_assets.partitions import START_DATE

# A week is retrained only when this many label days are complete at its start.
MIN_TRAIN_DAYS = 14
# A week's CDML tower is trained only when this many event days of co-watch precede it.
MIN_COWATCH_DAYS = 14


def _days(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


class ReplayError(RuntimeError):
    """A replay that cannot start or a run that failed, said in the user's terms."""


def first_landed_day(lake) -> str | None:
    """The first day whose videos carry their `_SUCCESS` marker, whatever VQ_START_DATE says."""
    days = lake.list_days(lake.path("landing", "videos"))
    return next((d for d in days if lake.day_complete("videos", d)), None)


def check_start(lake, start: str) -> None:
    """Refuse a replay that would wait forever on days that never landed."""
    first = first_landed_day(lake)
    if first is None:
        raise ReplayError(
            f"nothing has landed in {lake.root}/landing/videos: a day is landed when its "
            "folder dt=YYYY-MM-DD holds its parquet files and a _SUCCESS marker"
        )
    if START_DATE < first:
        raise ReplayError(
            f"VQ_START_DATE is {START_DATE}, but the first landed day in {lake.root} is {first}: "
            "the days before it have no data, and every partition that reads a window of days "
            f"would wait for them. Set VQ_START_DATE={first} (the first partition) and run again."
        )
    if start < first:
        raise ReplayError(f"--start {start} is before the first landed day {first}")


def reclaim_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark the replay's runs whose process is gone as failed and free their pool slots.

    `vq run` executes in process; a `kill -9` leaves its run STARTED, holding the `gpu` slot,
    and Dagster 1.13's run monitoring cannot see that an in-process run died (the default
    launcher has no health check). A replay run is dead when the process that started it (the
    pid on its RUN_START event) no longer exists, or is a newer process that reuses the pid.
    """
    reclaimed = []
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={"vq/replay": "true"})
    )
    for record in records:
        run = record.dagster_run
        starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        pid = starts[0].dagster_event.pid if starts and starts[0].dagster_event else None
        if pid is None or _alive(pid, starts[0].timestamp):
            continue
        instance.report_run_failed(run, f"vq: the process {pid} running it is gone (killed?)")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reclaimed.append(run.run_id)
    return reclaimed


def _alive(pid: int, started: float) -> bool:
    try:
        return psutil.Process(pid).create_time() <= started + 1.0
    except psutil.NoSuchProcess:
        return False


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _log_line(entry: dg.EventLogEntry) -> str:
    when = dt.datetime.fromtimestamp(entry.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    level = logging.getLevelName(entry.level)
    event = entry.dagster_event.event_type_value if entry.dagster_event else "LOG"
    message = entry.user_message or (entry.dagster_event.message if entry.dagster_event else "")
    return f"{when} {level:<7} {entry.job_name} {entry.step_key or '-'} {event} {message}"


class Replay:
    """Replays days through the code location's jobs on ``instance``.

    Dagster's console logger shows errors only (everything with ``verbose``); ``log`` gets one
    line per day with the steps it ran and the ETA, and each distinct warning once (a warning
    that every day repeats, such as placeholder weights, would bury the progress). Every run's
    full event log also goes to ``log_file``, and stays in the Dagster instance.
    """

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        lake,
        *,
        train_days: int,
        min_train_days: int = MIN_TRAIN_DAYS,
        log: Callable[[str], None] = print,
        log_file: Path | None = None,
        verbose: bool = False,
        asset_config: dict[str, dict] | None = None,
    ) -> None:
        self.defs, self.instance, self.lake, self.log = defs, instance, lake, log
        self.train_days, self.min_train_days = train_days, min_train_days
        self.log_file, self.verbose = log_file, verbose
        # Run config of assets by name (e.g. the flywheel's policy), given whenever they run.
        self.asset_config = asset_config or {}
        # What a week start trains: the quality model's chain, and the CDML tower.
        self.retrain_assets, self.cdml = RETRAIN_ASSETS, True
        self.runs = 0
        self._steps: list[str] = []
        self._warned: set[tuple[str, str]] = set()

    def _done(self, asset: str, partition: str) -> bool:
        return partition in self.instance.get_materialized_partitions(dg.AssetKey(asset))

    def _keep_log(self, run_id: str) -> None:
        entries = self.instance.all_logs(run_id)
        if not self.verbose:
            for e in entries:
                key = (e.step_key or e.job_name, e.user_message)
                if e.level >= logging.WARNING and e.user_message and key not in self._warned:
                    self._warned.add(key)
                    self.log(f"  warning ({key[0]}, shown once): {e.user_message}")
        if self.log_file is None:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a", encoding="utf-8") as f:
            f.writelines(_log_line(e) + "\n" for e in entries)

    def _run(
        self, job: str, partition: str, assets: list[str], *, checks_may_fail: bool = False
    ) -> bool:
        """Run `job` on the partition for the assets not yet materialized; False when a
        blocking check failed and `checks_may_fail` (a result, not an error: the asset's
        output is written); any other failure raises."""
        todo = [a for a in assets if not self._done(a, partition)]
        if not todo:
            return True
        started = time.monotonic()
        level = "DEBUG" if self.verbose else "ERROR"
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.instance,
            partition_key=partition,
            asset_selection=[dg.AssetKey(a) for a in todo],
            raise_on_error=False,
            tags={"vq/replay": "true"},
            run_config={
                "loggers": {"console": {"config": {"log_level": level}}},
                "ops": {
                    a: {"config": self.asset_config[a]} for a in todo if a in self.asset_config
                },
            },
        )
        self.runs += 1
        self._keep_log(result.run_id)
        failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
        if not result.success and checks_may_fail and failed_checks:
            names = ", ".join(e.check_name for e in failed_checks)
            self._steps.append(f"{job}[{partition}] blocking check FAILED ({names})")
            return False
        if not result.success:
            failures = [
                f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
                for e in result.all_events
                if e.event_type_value == "STEP_FAILURE"
            ]
            where = f"; the run's log is in {self.log_file}" if self.log_file else ""
            raise ReplayError(
                f"{job}[{partition}] failed (run {result.run_id}{where}):\n" + "\n".join(failures)
            )
        self._steps.append(f"{job}[{partition}] {time.monotonic() - started:.1f}s")
        if self.verbose:
            self.log(f"  {job}[{partition}] {', '.join(todo)} in {time.monotonic() - started:.1f}s")
        return True

    def day(self, day: str) -> None:
        self.week(day)
        # A lake without watch events (daily rollups only) has no event assets to run.
        self.chain(day, feature_assets(events_landed(self.lake)))
        self.close(shift(day, -WINDOW_DAYS))

    def week(self, day: str) -> None:
        """At a week start (Sunday), the week's model and CDML tower, when enough days exist."""
        if dt.date.fromisoformat(day).weekday() != 6:  # weekly partitions start on Sundays
            return
        complete = label_days_for_week(day, self.train_days, START_DATE)
        if len(complete) >= self.min_train_days:
            # A model the gate refuses is a result (the current one keeps scoring), not an error.
            self._run("retrain", day, self.retrain_assets, checks_may_fail=True)
        else:
            self._steps.append(
                f"no retraining yet ({len(complete)} < {self.min_train_days} label days)"
            )
        events = self.cdml and events_landed(self.lake)
        if events and len(_days(START_DATE, shift(day, -1))) >= MIN_COWATCH_DAYS:
            self._run("cdml", day, CDML_ASSETS)

    def scoring(self, day: str) -> bool:
        """Whether a promoted model exists to score `day` with."""
        return registry.production_as_of(self.lake, shift(day, 1)) is not None

    def chain(self, day: str, features: list[str]) -> None:
        """The day's `features` assets, then its scores and weights once a promoted model
        exists, and its CDML vectors and related videos once a tower does."""
        scoring = SCORING_ASSETS if self.scoring(day) else []
        if tower_week_as_of(self.lake, day) is not None:
            scoring = scoring + RELATED_ASSETS
        self._run("daily_chain", day, features + scoring)

    def close(self, closed: str) -> None:
        """The labels of creation day `closed`, whose window has just closed, and its lift."""
        if closed >= START_DATE:
            lift = LIFT_ASSETS if self._done("flywheel_sampling_weights", closed) else []
            self._run("labels", closed, LABEL_ASSETS + lift)

    def run(self, start: str, end: str) -> None:
        check_start(self.lake, start)
        for run_id in reclaim_dead_runs(self.instance):
            self.log(f"  reclaimed run {run_id}: its process was gone; marked failed, slots freed")
        days = _days(start, end)
        t0 = time.monotonic()
        for i, day in enumerate(days, 1):
            self._steps = []
            self.day(day)
            elapsed = time.monotonic() - t0
            eta = elapsed / i * (len(days) - i)
            steps = ", ".join(self._steps) or "nothing to do"
            self.log(
                f"day {day} [{i:>{len(str(len(days)))}}/{len(days)}] {steps}  "
                f"(elapsed {clock(elapsed)}, ETA {clock(eta)})"
            )
