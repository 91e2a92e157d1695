"""How close is the label asset to the cost of reading its events? (figures only, never asserted)

Simulates a lake (media off, seeded) whose 8 event days D..D+7 of one creation day D hold at least
20 million watch events, then times, side by side in one run (each variant in its own
subprocess, so that its peak RSS is its own; the order rotates every round; medians reported):

  vq_cold    the asset chain for D from nothing: `watch_daily_partials` for each event day
             D..D+7 (views `videos` = raw videos of E-7..E, `events` = day E, both registered
             with `Lake.register`, each partial written as parquet the way the IO manager does),
             then `labels_from_partials` for D over those 8 partial files.
  polars     the same labels for D straight from the 8 event-day files: one lazy query
             (scan_parquet, join, window filter, group by), checked equal to vq's labels.
  bare_scan  DuckDB reading the 6 event columns the label query needs over the same 8 days
             with a trivial aggregate: the floor of reading that data.

It also reports the steady state: in production each event day's partials are computed once and
serve the 8 creation days whose window covers it, so one creation day costs on average one
`watch_daily_partials` (the mean over the 8 measured) plus one `labels_from_partials`. And what
`video_watch_daily` adds on top of the query: `unknown_video_events`, a second pass over the
event day.

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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from vq_assets.core.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA  # noqa: E402
from vq_assets.core.labels import (  # noqa: E402
    LABEL_COLUMNS,
    WINDOW_DAYS,
    labels_from_partials,
    shift,
    unknown_video_events,
    watch_daily_partials,
)
from vq_assets.core.lake import Lake  # noqa: E402
from vq_assets.core.sql import connect  # noqa: E402

START = dt.date(2026, 1, 1)
# D is the 4th simulated day: its event days D..D+7 then all carry a near-steady load (the first
# days of a simulated platform have few videos old enough to be played).
DAY_OFFSET = 3
EVENT_COLUMNS = ("video_id", "event_ts", "watch_time_s", "liked", "commented", "shared")
VARIANTS = ("vq_cold", "polars", "bare_scan")
MIN_EVENTS = 20_000_000
COUNT_COLUMNS = ("plays", "skips", "full_watches", "likes", "comments", "shares", "early_events")
RATIO_COLUMNS = ("avg_watch_time_s", "skip_rate", "engagement_rate")


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
    from vq_assets.core.simulator import simulate_local

    if root.exists():
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


def count_rows(files: list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# --------------------------------------------------------------------------------------------
# the variants (each runs in a worker subprocess; the parent only reads their reports)


def run_vq_cold(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The asset chain for creation day `day`: 8 x `video_watch_daily`, 1 x `video_labels_7d`."""
    partial_files, partial_s, unknown_s = [], [], []
    schema: pa.Schema | None = None
    for e in event_days(day):
        started = time.perf_counter()
        con = connect()
        videos = landing_files(lake, "videos", [shift(e, -i) for i in range(WINDOW_DAYS, -1, -1)])
        lake.register(con, "videos", videos, VIDEOS_SCHEMA)
        lake.register(con, "events", landing_files(lake, "watch_events", [e]), WATCH_EVENTS_SCHEMA)
        partials = watch_daily_partials(con, e)
        partial_files.append(lake.write_table(str(scratch / f"dt={e}"), partials))
        schema = partials.schema
        partial_s.append(time.perf_counter() - started)
        # Not part of the label query, but `video_watch_daily` runs it on the same views.
        started = time.perf_counter()
        unknown_video_events(con)
        unknown_s.append(time.perf_counter() - started)
        con.close()
    assert schema is not None
    started = time.perf_counter()
    con = connect()
    lake.register(con, "videos", landing_files(lake, "videos", [day]), VIDEOS_SCHEMA)
    lake.register(con, "partials", partial_files, schema)
    labels = labels_from_partials(con, day)
    con.close()
    labels_s = time.perf_counter() - started
    return labels, {
        "seconds": sum(partial_s) + labels_s,
        "partials_s": partial_s,
        "labels_s": labels_s,
        "unknown_events_s": unknown_s,
    }


def run_polars(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    """The labels of DESIGN §4 for `day` in one lazy Polars query over the raw event files."""
    import polars as pl

    started = time.perf_counter()
    videos = pl.scan_parquet(landing_files(lake, "videos", [day])).select(
        "video_id", "creator_id", "created_at", "duration_s"
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
            skips=(in_window & (watch < 3.0)).sum(),
            full_watches=(in_window & (watch >= pl.col("duration_s"))).sum(),
            watch_time_sum=watch.filter(in_window).sum(),
            # Kleene logic: a null flag makes the conjunction null (or false), never counted.
            likes=(in_window & pl.col("liked")).sum(),
            comments=(in_window & pl.col("commented")).sum(),
            shares=(in_window & pl.col("shared")).sum(),
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
        )
        .sort("video_id")
        .collect(engine="streaming")
    )
    return labels.to_arrow(), {"seconds": time.perf_counter() - started}


def bare_scan_sql(columns: tuple[str, ...] = EVENT_COLUMNS) -> str:
    """One cheap aggregate per column, so every column the label query needs is decoded."""
    aggs = {
        "video_id": "max(video_id)",
        "event_ts": "max(event_ts)",
        "watch_time_s": "sum(watch_time_s)",
        "liked": "count_if(liked)",
        "commented": "count_if(commented)",
        "shared": "count_if(shared)",
    }
    return "SELECT count(*), " + ", ".join(aggs[c] for c in columns) + " FROM events"


def run_bare_scan(lake: Lake, day: str, scratch: Path) -> tuple[pa.Table, dict[str, Any]]:
    started = time.perf_counter()
    con = connect()
    lake.register(con, "events", landing_files(lake, "watch_events", event_days(day)),
                  WATCH_EVENTS_SCHEMA)
    result = con.sql(bare_scan_sql()).to_arrow_table()
    con.close()
    return result, {"seconds": time.perf_counter() - started, "events": result.column(0)[0].as_py()}


RUNNERS: dict[str, Callable[[Lake, str, Path], tuple[pa.Table, dict[str, Any]]]] = {
    "vq_cold": run_vq_cold,
    "polars": run_polars,
    "bare_scan": run_bare_scan,
}


def worker(variant: str, lake_root: Path, day: str, out: Path) -> None:
    """Run one variant once; its result goes to `out` (untimed), its report to stdout."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=out.parent))
    try:
        result, report = RUNNERS[variant](Lake.local(lake_root), day, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    pq.write_table(result, out)
    print(json.dumps(report))


def measure(variant: str, lake_root: Path, day: str, out: Path) -> dict[str, Any]:
    """Run a worker subprocess and add its own peak RSS (wait4 gives per-child usage)."""
    cmd = [sys.executable, __file__, "--worker", variant, "--lake", str(lake_root),
           "--day", day, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} worker failed with exit code {proc.returncode}")
    report = json.loads(stdout.strip().splitlines()[-1])
    report["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return report


# --------------------------------------------------------------------------------------------
# checks and profile


def check_equal(vq: pa.Table, other: pa.Table, name: str) -> None:
    """Same videos in the same order, exact counts, ratios within 1e-9, nulls in the same rows."""
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
    assert set(LABEL_COLUMNS) <= set(other.column_names)


def profile(lake: Lake, day: str) -> None:
    """EXPLAIN ANALYZE of the partials query of one event day, and of that day's bare scan."""
    e = shift(day, WINDOW_DAYS // 2)
    con = connect()
    videos = landing_files(lake, "videos", [shift(e, -i) for i in range(WINDOW_DAYS + 1)])
    lake.register(con, "videos", videos, VIDEOS_SCHEMA)
    lake.register(con, "events", landing_files(lake, "watch_events", [e]), WATCH_EVENTS_SCHEMA)
    con.execute("PRAGMA enable_profiling = 'query_tree_optimizer'")
    # The profile goes to stdout when the relation is materialised.
    print(f"\n--- profile: watch_daily_partials({e}) ---", flush=True)
    watch_daily_partials(con, e)
    print(f"\n--- profile: bare scan of {e} ---", flush=True)
    con.sql(bare_scan_sql()).to_arrow_table()
    con.close()


# --------------------------------------------------------------------------------------------
# the run


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events-days", type=int, default=11, help="days to simulate (>= 4 + 7)")
    p.add_argument("--videos-per-day", type=int, default=12_500)
    p.add_argument("--mean-plays", type=float, default=220.0, help="lifetime plays per video")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--keep", type=Path, help="lake folder to create or reuse (default: temp)")
    p.add_argument("--profile", action="store_true", help="print EXPLAIN ANALYZE profiles")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--day", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.lake, args.day, args.out)
        return 0
    if args.events_days < DAY_OFFSET + WINDOW_DAYS + 1:
        p.error(f"--events-days must be >= {DAY_OFFSET + WINDOW_DAYS + 1}")

    work = Path(tempfile.mkdtemp(prefix="vq-bench-labels-"))
    lake_root = (args.keep or work / "lake").resolve()
    try:
        return run(args, lake_root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, lake_root: Path, work: Path) -> int:
    ensure_lake(lake_root, args)
    lake = Lake.local(lake_root)
    day = (START + dt.timedelta(days=DAY_OFFSET)).isoformat()
    files = landing_files(lake, "watch_events", event_days(day))
    n_events = count_rows(files)
    videos = count_rows(landing_files(lake, "videos", [day]))
    print(f"creation day {day}: {videos:,} videos; event days {event_days(day)[0]}.."
          f"{event_days(day)[-1]}: {len(files)} files, {n_events:,} events")
    if n_events < MIN_EVENTS:
        print(f"WARNING: fewer than {MIN_EVENTS:,} events; raise --mean-plays or --videos-per-day")
    import duckdb
    import polars
    import pyarrow

    print(f"duckdb {duckdb.__version__}, polars {polars.__version__}, pyarrow "
          f"{pyarrow.__version__}; {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")

    reports: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]
        for variant in order:
            out = work / f"{variant}.parquet"
            reports[variant].append(measure(variant, lake_root, day, out))
            print(f"  round {r + 1} {variant:9s} {reports[variant][-1]['seconds']:6.2f} s", flush=True)
        if r == 0:  # a benchmark comparing different answers is worthless
            vq = pq.read_table(work / "vq_cold.parquet")
            check_equal(vq, pq.read_table(work / "polars.parquet"), "polars")
            scanned = reports["bare_scan"][0]["events"]
            if scanned != n_events:
                raise AssertionError(f"bare scan read {scanned:,} events, expected {n_events:,}")
            print(f"  polars labels == vq labels ({vq.num_rows:,} videos, "
                  f"{sum(vq.column('plays').to_pylist()):,} plays in windows)")

    secs = {v: median([r["seconds"] for r in reports[v]]) for v in VARIANTS}
    rss = {v: max(r["peak_rss_mib"] for r in reports[v]) for v in VARIANTS}
    cold = reports["vq_cold"]
    mean_partial = median([statistics.mean(r["partials_s"]) for r in cold])
    labels_s = median([r["labels_s"] for r in cold])
    steady = mean_partial + labels_s
    unknown = median([statistics.mean(r["unknown_events_s"]) for r in cold])
    per_day_scan = secs["bare_scan"] / len(files)

    print(f"\nevents read: {n_events:,} (8 event days); medians of {args.rounds} rounds")
    print(f"{'variant':34s} {'seconds':>8s} {'Mevents/s':>10s} {'peak RSS MiB':>13s}")
    for v in VARIANTS:
        print(f"{v:34s} {secs[v]:8.2f} {n_events / secs[v] / 1e6:10.1f} {rss[v]:13.0f}")
    print(f"  vq_cold = 8 x partials (mean {mean_partial:.3f} s) + labels_from_partials "
          f"({labels_s:.3f} s)")
    print(f"{'vq steady state (1 partial + labels)':34s} {steady:8.2f}")
    print(f"\nvq_cold / bare_scan      = {secs['vq_cold'] / secs['bare_scan']:.2f}  (goal <= 1.5)")
    print(f"vq_cold / polars         = {secs['vq_cold'] / secs['polars']:.2f}  (goal < 1)")
    print(f"vq_steady / bare_scan    = {steady / secs['bare_scan']:.2f}  "
          f"(amortised cost of one creation day vs reading its 8 event days)")
    print(f"vq_steady / 1-day scan   = {steady / per_day_scan:.2f}  "
          f"(vs reading the one event day it computes on average)")
    print(f"video_watch_daily also runs unknown_video_events: +{unknown:.3f} s per event day "
          f"(a second pass, {unknown / mean_partial:.0%} of the partials query)")
    if args.profile:
        profile(lake, day)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
