"""How close is the label asset to the cost of reading its events? (figures only, never asserted)

Simulates a lake (media off, seeded) whose 8 event days D..D+7 of one creation day D hold at least
20 million watch events, then times, side by side in one run (each variant in its own
subprocess, so that its peak RSS is its own; the order rotates every round; medians reported;
wall and CPU seconds, CPU being the steadier figure on a shared machine):

  vq_cold      the asset chain for D from nothing: `watch_daily_partials` for each event day
               D..D+7 (views `videos` = raw videos of E-7..E, `events` = day E, both registered
               with `Lake.register`, each partial written as parquet as the IO manager does),
               then `labels_from_partials` for D over those 8 partial files.
  direct       D alone without partials: `watch_daily_partials` over the 8 event days joined
               with D's videos only (what a one-off cold day could do), then
               `labels_from_partials`.
  polars       the same labels for D straight from the 8 event-day files in one lazy query
               (scan_parquet, join, window filter, group by, streaming engine).
  bare_scan    DuckDB reading the 6 event columns the label query needs over the same 8 days
               with a trivial aggregate: the floor of reading that data.

Every variant's labels are checked equal to vq_cold's (exact counts, ratios within 1e-9, nulls
where plays = 0) before any number is printed.

It also reports the steady state: in production each event day's partials are computed once and
serve the 8 creation days whose window covers it, so one creation day costs on average one
`watch_daily_partials` (the mean of the 8 measured) plus one `labels_from_partials`; and what
`video_watch_daily` runs besides the query: `unknown_video_events`, a second pass over the day.

Goal (issue): vq_cold within 1.5x of bare_scan and faster than polars.

    python bench/labels.py                                  # ~21M events, 3 rounds, < 5 min
    python bench/labels.py --keep /tmp/vq-labels-lake       # reuse the lake on later runs
    python bench/labels.py --keep /tmp/vq-labels-lake --profile   # + EXPLAIN ANALYZE
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.labels.windows import (  # noqa: E402
    LABEL_COLUMNS,
    PARTIAL_COUNTS,
    SKIP_SECONDS,
    WINDOW_DAYS,
    labels_from_partials,
    shift,
    unknown_video_events,
    watch_daily_partials,
)
from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA  # noqa: E402
from vq_assets.core.lake.sql import connect  # noqa: E402
from vq_assets.core.lake.store import Lake  # noqa: E402

START = dt.date(2026, 1, 1)
EVENT_COLUMNS = ("video_id", "event_ts", "watch_time_s", "liked", "commented", "shared")
VARIANTS = ("vq_cold", "direct", "polars", "bare_scan")
LABEL_VARIANTS = VARIANTS[:-1]
MIN_EVENTS = 20_000_000
COUNT_COLUMNS = PARTIAL_COUNTS  # the label table's counts are the partials' sums
RATIO_COLUMNS = ("avg_watch_time_s", "skip_rate", "engagement_rate", "virality")


# --------------------------------------------------------------------------------------------
# the lake


def event_days(day: str) -> list[str]:
    return [shift(day, i) for i in range(WINDOW_DAYS + 1)]


def landing_files(lake: Lake, table: str, days: list[str]) -> list[str]:
    return [f for d in days for f in lake.list_files(lake.landing_dir(table, d))]


def ensure_lake(root: Path, args: argparse.Namespace) -> None:
    """Simulate the lake unless `root` already holds one made with the same parameters."""
    params = {
        "start": START.isoformat(),
        "days": args.events_days,
        "videos_per_day": args.videos_per_day,
        "mean_plays": args.mean_plays,
        "seed": args.seed,
    }
    stamp = root / "bench_params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"reusing the lake at {root}")
        return
    from vq_assets.core.sources.simulator import simulate_local

    shutil.rmtree(root / "landing", ignore_errors=True)
    started = time.perf_counter()
    summary = simulate_local(
        root,
        START,
        args.events_days,
        args.videos_per_day,
        args.seed,
        mean_plays=args.mean_plays,
        media=False,
    )
    print(
        f"simulated {summary.days} days: {summary.videos:,} videos, {summary.events:,} events "
        f"in {time.perf_counter() - started:.1f} s"
    )
    stamp.write_text(json.dumps(params))


def connect_event_day(lake: Lake, event_day: str) -> duckdb.DuckDBPyConnection:
    """A connection with the views `video_watch_daily`[E] reads: `videos` of days E-7..E (the
    videos whose window can hold an event of E) and `events` of day E."""
    con = connect()
    days = [shift(event_day, -i) for i in range(WINDOW_DAYS, -1, -1)]
    lake.register(con, "videos", landing_files(lake, "videos", days), VIDEOS_SCHEMA)
    lake.register(
        con, "events", landing_files(lake, "watch_events", [event_day]), WATCH_EVENTS_SCHEMA
    )
    return con


def count_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# --------------------------------------------------------------------------------------------
# the variants (each runs in a worker subprocess; the parent only reads their reports)


PartialsFn = Callable[[duckdb.DuckDBPyConnection, str], pa.Table]


class Clock:
    """Wall and CPU seconds since the last `lap` (CPU: every thread of this process)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        lap = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return lap


def run_chain(
    lake: Lake, day: str, scratch: Path, partials_fn: PartialsFn
) -> tuple[pa.Table, dict[str, Any]]:
    """The asset chain for creation day `day`: 8 x `video_watch_daily`, 1 x `video_labels_7d`."""
    partial_files: list[str] = []
    partials_laps, unknown_laps = [], []
    schema: pa.Schema | None = None
    clock = Clock()
    for e in event_days(day):
        con = connect_event_day(lake, e)
        partials = partials_fn(con, e)
        partial_files.append(lake.write_table(str(scratch / f"dt={e}"), partials))
        schema = partials.schema
        partials_laps.append(clock.lap())
        # Not part of the label query, but `video_watch_daily` runs it on the same views.
        unknown_video_events(con)
        con.close()
        unknown_laps.append(clock.lap())
    assert schema is not None
    con = connect()
    lake.register(con, "videos", landing_files(lake, "videos", [day]), VIDEOS_SCHEMA)
    lake.register(con, "partials", partial_files, schema)
    labels = labels_from_partials(con, day)
    con.close()
    return labels, {
        "partials": partials_laps,  # [(wall, CPU)] per event day
        "labels": clock.lap(),
        "unknown_events": unknown_laps,
        # Reported on its own line, not in the chain's total (the label query proper).
        "excluded_s": sum(w for w, _ in unknown_laps),
        "excluded_cpu_s": sum(c for _, c in unknown_laps),
    }


def run_vq_cold(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    return run_chain(lake, day, scratch, watch_daily_partials)


def run_direct(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    """One creation day without partials: `watch_daily_partials` over all 8 event days at once,
    joined with that day's videos only, then summed by `labels_from_partials` as usual."""
    con = connect()
    lake.register(con, "videos", landing_files(lake, "videos", [day]), VIDEOS_SCHEMA)
    lake.register(
        con, "events", landing_files(lake, "watch_events", event_days(day)), WATCH_EVENTS_SCHEMA
    )
    con.register("partials", watch_daily_partials(con, day))
    labels = labels_from_partials(con, day)
    con.close()
    return labels, {}


def run_polars(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The labels of DESIGN §4 for `day` in one lazy Polars query over the raw event files."""
    import polars as pl

    videos = pl.scan_parquet(landing_files(lake, "videos", [day])).select(
        "video_id", "creator_id", "created_at", "duration_s", "creator_followers"
    )
    events = pl.scan_parquet(landing_files(lake, "watch_events", event_days(day))).select(
        EVENT_COLUMNS
    )
    ts, created = pl.col("event_ts"), pl.col("created_at")
    in_window = (ts >= created) & (ts < created + pl.duration(days=WINDOW_DAYS))
    watch = pl.col("watch_time_s")
    per_video = (
        events.join(videos.select("video_id", "created_at", "duration_s"), on="video_id")
        .group_by("video_id")
        .agg(
            plays=in_window.sum(),
            skips=(in_window & (watch < SKIP_SECONDS)).sum(),
            full_watches=(in_window & (watch >= pl.col("duration_s"))).sum(),
            watch_time_sum=watch.filter(in_window).sum(),
            # Kleene logic: a null flag makes the conjunction null (or false), never counted.
            likes=(in_window & pl.col("liked")).sum(),
            comments=(in_window & pl.col("commented")).sum(),
            shares=(in_window & pl.col("shared")).sum(),
            day0_plays=(in_window & (ts < created + pl.duration(days=1))).sum(),
            early_events=(ts < created).sum(),
        )
    )
    plays = pl.col("plays")
    counts = [pl.col(c).fill_null(0).cast(pl.Int64) for c in COUNT_COLUMNS]

    def per_play(expr: pl.Expr) -> pl.Expr:
        return pl.when(plays > 0).then(expr / plays)

    labels = (
        videos.join(per_video, on="video_id", how="left")
        .select(
            "video_id",
            "creator_id",
            "created_at",
            *counts,
            avg_watch_time_s=per_play(pl.col("watch_time_sum")),
            skip_rate=per_play(pl.col("skips")),
            engagement_rate=per_play(pl.col("likes") + pl.col("comments")),
            # ViraNova's virality; null without followers (never a division by zero).
            virality=pl.when(pl.col("creator_followers") > 0).then(
                (pl.col("day0_plays").fill_null(0) + plays.fill_null(0))
                / pl.col("creator_followers")
            ),
        )
        .sort("video_id")
        .collect(engine="streaming")
    )
    return labels.to_arrow(), {}


def bare_scan_sql() -> str:
    """One cheap aggregate per column the label query needs, so that each is read and decoded.

    (DuckDB answers a lone `max(video_id)` from parquet statistics without reading the column;
    `sum(strlen(...))` cannot be, so the string column is really read.)
    """
    return (
        "SELECT count(*), sum(strlen(video_id)), max(event_ts), sum(watch_time_s), "
        "count_if(liked), count_if(commented), count_if(shared) FROM events"
    )


def run_bare_scan(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    con = connect()
    lake.register(
        con, "events", landing_files(lake, "watch_events", event_days(day)), WATCH_EVENTS_SCHEMA
    )
    result = con.sql(bare_scan_sql()).to_arrow_table()
    con.close()
    return result, {"events": result.column(0)[0].as_py()}


def run_idle(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Nothing: the worker's peak RSS from the interpreter and its imports alone."""
    return pa.table({"x": [0]}), {}


RUNNERS: dict[str, Callable[[Lake, str, Path], tuple[pa.Table, dict[str, Any]]]] = {
    "vq_cold": run_vq_cold,
    "direct": run_direct,
    "polars": run_polars,
    "bare_scan": run_bare_scan,
    "idle": run_idle,
}


def worker(variant: str, lake_root: Path, day: str, out: Path) -> None:
    """Run one variant once; its result goes to `out` (untimed), its report to stdout."""
    if variant == "polars":
        import polars  # noqa: F401  (imported before the clock starts, as duckdb is)
    scratch = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=out.parent))
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        result, report = RUNNERS[variant](Lake.local(lake_root), day, scratch)
        # process_time counts every thread of this process: DuckDB's and Polars' workers too.
        report |= {
            "seconds": time.perf_counter() - wall - report.get("excluded_s", 0.0),
            "cpu_s": time.process_time() - cpu - report.get("excluded_cpu_s", 0.0),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    pq.write_table(result, out)
    print(json.dumps(report | {"peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss would not: it
    keeps the high-water mark of the forking parent (here, possibly the simulator's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no procfs: best effort


def measure(variant: str, lake_root: Path, day: str, out: Path) -> dict[str, Any]:
    """Run one variant in a fresh worker subprocess and return its report."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--lake",
        str(lake_root),
        "--day",
        day,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# checks and profile


def check_equal(vq: pa.Table, other: pa.Table, name: str) -> None:
    """Same videos in the same order, exact counts, ratios within 1e-9, nulls in the same rows."""
    missing = set(LABEL_COLUMNS) - set(other.column_names)
    if missing or vq.num_rows != other.num_rows:
        raise AssertionError(f"{name}: {other.num_rows} rows (vq {vq.num_rows}), lacks {missing}")
    for col in ("video_id", "creator_id", "created_at", *COUNT_COLUMNS):
        a, b = vq.column(col).to_pylist(), other.column(col).to_pylist()
        if a != b:
            bad = sum(x != y for x, y in zip(a, b, strict=True))
            raise AssertionError(f"{name}: column {col} differs from vq in {bad} rows")
    for col in RATIO_COLUMNS:
        a, b = vq.column(col).to_pylist(), other.column(col).to_pylist()
        bad = sum(
            (x is None) != (y is None) or (x is not None and abs(x - y) > 1e-9)
            for x, y in zip(a, b, strict=True)
        )
        if bad:
            raise AssertionError(f"{name}: column {col} differs from vq in {bad} rows")


def _print_plan(node: dict[str, Any], depth: int = 0) -> None:
    info = {
        k: v
        for k, v in node.get("extra_info", {}).items()
        if k in ("Conditions", "Groups", "Projections", "Expression")
    }
    print(
        f"{'  ' * depth}{node['type']:<18s} {node['timing']:6.3f} s "
        f"{node['intermediate_rows']:>10,} rows  {json.dumps(info)[:100]}"
    )
    for child in node.get("children", []):
        _print_plan(child, depth + 1)


def profile(lake: Lake, day: str, work: Path) -> None:
    """Operator timings (DuckDB's profiler, as EXPLAIN ANALYZE shows them) of one event day:
    labels.py's partials query and the bare scan."""
    e = shift(day, WINDOW_DAYS // 2)
    con = connect_event_day(lake, e)
    runs: dict[str, Callable[[], object]] = {
        "labels.py watch_daily_partials": lambda: watch_daily_partials(con, e),
        "bare scan": lambda: con.sql(bare_scan_sql()).to_arrow_table(),
    }
    output = work / "profile.json"
    con.execute("PRAGMA enable_profiling = 'json'")
    con.execute(f"PRAGMA profiling_output = '{output}'")
    for name, run_query in runs.items():
        run_query()
        plan = json.loads(output.read_text())
        query = plan["query"]
        print(
            f"\n--- profile, event day {e}: {name}: {query['total_time']:.3f} s, "
            f"CPU {query['cpu_time']:.3f} s ---"
        )
        for node in plan["operator"]:
            _print_plan(node)
    con.close()


# --------------------------------------------------------------------------------------------
# the run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-days", type=int, default=11, help="days to simulate; D = the 8th last")
    p.add_argument("--videos-per-day", type=int, default=12_500)
    p.add_argument("--mean-plays", type=float, default=220.0, help="lifetime plays per video")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", type=Path, help="lake folder to create or reuse (default: temp)")
    p.add_argument("--profile", action="store_true", help="print EXPLAIN ANALYZE profiles")
    p.add_argument("--worker", choices=RUNNERS, help=argparse.SUPPRESS)
    p.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--day", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.lake, args.day, args.out)
        return 0
    if args.events_days < WINDOW_DAYS + 1:
        p.error(f"--events-days must be >= {WINDOW_DAYS + 1}")

    work = Path(tempfile.mkdtemp(prefix="vq-bench-labels-"))
    try:
        return run(args, (args.keep or work / "lake").resolve(), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, lake_root: Path, work: Path) -> int:
    ensure_lake(lake_root, args)
    lake = Lake.local(lake_root)
    # D's event days are the last 8 simulated: the busiest, as the first days of a simulated
    # platform have few videos old enough to be played.
    day = (START + dt.timedelta(days=args.events_days - WINDOW_DAYS - 1)).isoformat()
    days = event_days(day)
    files = landing_files(lake, "watch_events", days)
    n_events = count_rows(files)
    print(
        f"creation day {day}: {count_rows(landing_files(lake, 'videos', [day])):,} videos; "
        f"event days {days[0]}..{days[-1]}: {len(files)} files, {n_events:,} events"
    )
    if n_events < MIN_EVENTS:
        print(f"WARNING: fewer than {MIN_EVENTS:,} events; raise --mean-plays or --videos-per-day")
    import polars

    print(
        f"duckdb {duckdb.__version__}, polars {polars.__version__}, pyarrow {pa.__version__}; "
        f"{os.cpu_count()} CPUs; load average before: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    reports: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for variant in order:
            report = measure(variant, lake_root, day, work / f"{variant}.parquet")
            reports[variant].append(report)
            print(
                f"  round {r + 1} {variant:12s} {report['seconds']:6.2f} s wall "
                f"{report['cpu_s']:6.2f} s CPU",
                flush=True,
            )
        if r == 0:  # a benchmark comparing different answers is worthless
            vq = pq.read_table(work / "vq_cold.parquet")
            for variant in LABEL_VARIANTS[1:]:
                check_equal(vq, pq.read_table(work / f"{variant}.parquet"), variant)
            scanned = reports["bare_scan"][0]["events"]
            if scanned != n_events:
                raise AssertionError(f"bare scan read {scanned:,} events, expected {n_events:,}")
            print(
                f"  labels of {', '.join(LABEL_VARIANTS[1:])} == vq_cold's ({vq.num_rows:,} "
                f"videos, {sum(vq.column('plays').to_pylist()):,} plays in windows)"
            )
    idle_rss = measure("idle", lake_root, day, work / "idle.parquet")["peak_rss_mib"]
    report_results(reports, n_events, idle_rss, args.rounds)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.profile:
        profile(lake, day, work)
    return 0


def report_results(
    reports: dict[str, list[dict[str, Any]]], n_events: int, idle_rss: float, rounds: int
) -> None:
    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in reports[variant])

    wall = {v: med(v, "seconds") for v in VARIANTS}
    cpu = {v: med(v, "cpu_s") for v in VARIANTS}
    rss = {v: max(r["peak_rss_mib"] for r in reports[v]) for v in VARIANTS}
    print(f"\nevents read: {n_events:,} (8 event days); medians of {rounds} rounds")
    print(f"{'variant':16s} {'wall s':>7s} {'CPU s':>7s} {'Mevents/s':>10s} {'peak RSS MiB':>13s}")
    for v in VARIANTS:
        print(
            f"{v:16s} {wall[v]:7.2f} {cpu[v]:7.2f} {n_events / wall[v] / 1e6:10.1f} {rss[v]:13.0f}"
        )
    print(f"{'(idle worker)':16s} {'':7s} {'':7s} {'':10s} {idle_rss:13.0f}")

    # Steady state: the mean of the 8 partials (one event day) + labels_from_partials.
    steady: dict[str, tuple[float, float]] = {}
    for v in ("vq_cold",):
        partial = [
            statistics.median(statistics.mean(lap[i] for lap in r["partials"]) for r in reports[v])
            for i in (0, 1)
        ]
        labels = [statistics.median(r["labels"][i] for r in reports[v]) for i in (0, 1)]
        steady[v] = (partial[0] + labels[0], partial[1] + labels[1])
        print(
            f"{v}: 8 x partials (mean {partial[0]:.3f} s wall, {partial[1]:.3f} s CPU) + "
            f"labels_from_partials ({labels[0]:.3f} s, {labels[1]:.3f} s CPU); steady state = "
            f"{steady[v][0]:.3f} s wall, {steady[v][1]:.3f} s CPU per creation day"
        )
    unknown = [
        statistics.median(
            statistics.mean(lap[i] for lap in r["unknown_events"]) for r in reports["vq_cold"]
        )
        for i in (0, 1)
    ]
    print(
        f"video_watch_daily also runs unknown_video_events: +{unknown[0]:.3f} s wall, "
        f"{unknown[1]:.3f} s CPU per event day, a second pass over the day's events"
    )

    print("\nratios (wall; CPU in brackets)")
    bare = "bare_scan"

    def ratio(a: str, b: str) -> str:
        return f"{wall[a] / wall[b]:5.2f} [{cpu[a] / cpu[b]:5.2f}]"

    for v in LABEL_VARIANTS[:2]:
        print(
            f"  {v:12s} / bare_scan = {ratio(v, bare)}   {v:12s} / polars = {ratio(v, 'polars')}"
            "   (goal: <= 1.5 and < 1)"
        )
    print(f"  polars       / bare_scan = {ratio('polars', bare)}")
    for v, (s_wall, s_cpu) in steady.items():
        print(
            f"  {v} steady state / bare_scan = {s_wall / wall[bare]:5.2f} "
            f"[{s_cpu / cpu[bare]:5.2f}] (vs reading all 8 days)   / 1-day scan = "
            f"{8 * s_wall / wall[bare]:5.2f} [{8 * s_cpu / cpu[bare]:5.2f}]   / polars = "
            f"{s_wall / wall['polars']:5.2f} [{s_cpu / cpu['polars']:5.2f}]"
        )


if __name__ == "__main__":
    raise SystemExit(main())
