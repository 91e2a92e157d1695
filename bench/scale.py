"""Does a day of 1M new videos and 100M events fit one 2-core node? (figures only, never asserted)

One node, DuckDB bounded by VQ_DUCKDB_MEMORY_LIMIT (--memory-limit, default 4GB) and spilling to
VQ_DUCKDB_TEMP_DIR, on a simulated day written in streaming fashion (bench/_scale_data.py: days
C0..C8, label day D = C0, full-size event day E = C7, scoring day F = C8). Each stage calls the
core functions its asset calls, in the same order, on a local `Lake`, and writes its output where
the IO manager would; each runs in its own subprocess, so wall s, CPU s (all threads) and peak
RSS (VmHWM) are its own. What each stage reads:

  ingest_videos     raw_videos[F]: `validate_day` of F's landing videos (`videos` rows), ids
                    checked against every ingested day (`register_ingested_ids`: C0..C7).
  ingest_events     watch_events[E]: `validate_day` of E's `events` landing rows (contract rules,
                    exact duplicates dropped); valid rows written to the asset, rejects to
                    quarantine.
  partials          video_watch_daily[E]: `watch_daily_partials` + `unknown_video_events` over
                    raw_videos E-7..E (8 x `videos`) and watch_events[E].
  labels            video_labels_7d[D]: `labels_for_day` (+ `label_range_violations`) over the
                    partials of event days D..D+7. Those of C0..C6 are set up (untimed) from
                    landing days holding only C0's plays: events x AGE_WEIGHTS[k] rows each,
                    the rows a steady-state day holds for D's videos; E's partials are full.
  creator_features  creator_features[F]: history = raw_videos C0..F (9 days, not 365) and the
                    one closed label day D; `creator_features` + `point_in_time_violations`.
  scoring           quality_scores[F]: `joined_batches` over raw_videos, video_embeddings (random
                    vectors of BLIP base's width 256 + 256) and creator_features of F; model v1
                    loaded with its file hashes checked (`train_model`'s network, production
                    shape, 5 members, one epoch on synthetic rows: production's cost, not its
                    scores); `score_batches`, 50k videos at a time.
  flywheel          flywheel_sampling_weights[F]: `exclusions` + `sampling_weights`.

Untimed setup (reported): generating the lake, ingesting the videos of C0..C7, the partials of
C0..C6. Per stage it prints a check: peak RSS <= memory limit + the interpreter baseline (an
idle worker with the same imports). A parent watchdog kills a worker whose RSS passes --rss-cap
or when the machine's available memory falls under 1.5 GiB, and reports it. From the measured
rates it projects 1B events a day, videos in proportion (CPU hours, cores, memory, spill, hours
on this node: see `project`), and the embedding GPU-hours of the day's videos at 8 frames each,
from BLIP base's image tower measured here when CUDA is present, else a published rate (timm's
ViT-B/16 at 384 px on an RTX 4090, `PUBLISHED_GPU`).

    python bench/scale.py --videos 20000 --events 2000000           # ~1 min: a smoke run
    python bench/scale.py --keep /tmp/vq-scale-lake                  # 1M videos, 100M events
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _scale_data
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from _scale_data import (  # noqa: E402
    Layout,
    blip_images_per_s,
    limit_bytes,
    peak_rss_mib,
    watch,
    write_embeddings,
    write_landing,
    write_model,
)

from vq_assets.core.labels.source import choose_label_source, labels_for_day  # noqa: E402
from vq_assets.core.labels.windows import (  # noqa: E402
    LABELS_SCHEMA,
    WINDOW_DAYS,
    creator_features,
    label_range_violations,
    point_in_time_violations,
    shift,
    stage_partials,
    unknown_video_events,
)
from vq_assets.core.lake.contract import (  # noqa: E402
    VIDEOS,
    VIDEOS_SCHEMA,
    WATCH_EVENTS,
    register_ingested_ids,
    validate_day,
)
from vq_assets.core.lake.sql import connect  # noqa: E402
from vq_assets.core.lake.store import (  # noqa: E402
    Lake,
    PartitionFiles,
    StagedFile,
)

START = dt.date(2026, 1, 1)
THREADS_ENV = "VQ_BENCH_THREADS"
MAX_QUARANTINE_SHARE = 0.05  # IngestConfig's default
HISTORY_DAYS = 365  # vq_assets.partitions.HISTORY_DAYS (not imported: it pulls in dagster)
# Published rate for the GPU projection when no GPU is lent: timm's inference benchmark,
# huggingface/pytorch-image-models results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv,
# row vit_base_patch16_384 (BLIP base's image tower: ViT-B/16 at 384 px): 915.77 images/s,
# AMP, batch 1024, PyTorch 2.4.0, CUDA 12.4, RTX 4090.
PUBLISHED_GPU = (915.77, "RTX 4090, timm benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv")
VIT_TOKENS = 577  # 24 x 24 patches + CLS at 384 px; a text token costs about one image token


# --------------------------------------------------------------------------------------------
# the stages (each runs in a worker subprocess)


def duck() -> duckdb.DuckDBPyConnection:
    """`DuckDBResource.connect()` as `resources_for_deployment` sets it up: memory limit and
    spill directory from the environment; threads from --threads, else DuckDB's default."""
    threads = os.environ.get(THREADS_ENV)
    return connect(
        memory_limit=os.environ.get("VQ_DUCKDB_MEMORY_LIMIT") or None,
        threads=int(threads) if threads else None,
        temp_dir=os.environ.get("VQ_DUCKDB_TEMP_DIR") or None,
    )


def files_of(lake: Lake, asset: str, days: list[str]) -> PartitionFiles:
    """What `LakeIOManager.load_input` hands an asset: the partitions' files, unread."""
    return PartitionFiles(lake, asset, tuple(days), tuple(lake.asset_file(asset, d) for d in days))


def parquet_rows(files: tuple[str, ...] | list[str]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def ingest(lake: Lake, table: str, day: str) -> dict[str, Any]:
    """`raw_videos` / `watch_events` and their `_publish`, then the IO manager's write (events:
    streamed to a staged file that the IO manager publishes, as the asset does)."""
    asset = "raw_videos" if table == "videos" else "watch_events"
    stage = lake.staging_path(asset, day) if table == "watch_events" else None
    with duck() as con:
        if table == "videos":
            register_ingested_ids(con, lake, "seen_videos", "raw_videos", except_day=day)
            result = validate_day(con, lake, VIDEOS, day, seen_video_ids="seen_videos")
        else:
            result = validate_day(con, lake, WATCH_EVENTS, day, stage=stage)
    passed = result.quarantine_share <= MAX_QUARANTINE_SHARE
    lake.write_table(lake.quarantine_dir(table, day), result.rejects, publish=passed)
    if result.rejects.num_rows:
        result.rejects.group_by("reason").aggregate([("reason", "count")])
    if isinstance(result.valid, StagedFile):
        lake.publish_staged(result.valid, lake.asset_dir(asset, day), publish=passed)
    else:
        lake.write_partitions(asset, result.valid, [day], publish=passed)
    return {
        "rows": result.rows_read,
        "rows_out": result.rows_valid,
        "quarantined": result.rejects.num_rows,
        "duplicates": result.duplicates_dropped,
        # The validated day held whole in Python before it is written (outside DuckDB's limit);
        # 0 when it was streamed to a staged file.
        "arrow_mib": result.valid.nbytes / 2**20 if isinstance(result.valid, pa.Table) else 0.0,
    }


def partials(lake: Lake, day: str) -> dict[str, Any]:
    """`video_watch_daily`[day]; events from the ingested asset, else (set-up days) landing."""
    # E-7..E; a window reaching before the lake's first day maps to fewer partitions.
    days = [shift(day, -i) for i in range(WINDOW_DAYS, -1, -1)]
    videos = files_of(
        lake, "raw_videos", [d for d in days if lake.exists(lake.asset_file("raw_videos", d))]
    )
    events = files_of(lake, "watch_events", [day])
    source = "asset"
    if not lake.exists(events.files[0]):
        source = "landing"
        landing = lake.list_files(lake.landing_dir("watch_events", day))
        events = PartitionFiles(lake, "watch_events", (day,), tuple(landing))
    # As the asset does: streamed into a staged file, published by rename.
    stage = lake.staging_path("video_watch_daily", day)
    with duck() as con:
        videos.register(con, "videos", VIDEOS_SCHEMA)
        events.register(con, "events")
        staged, plays, _ = stage_partials(con, day, stage)
        unknown = unknown_video_events(con)
    lake.publish_staged(staged, lake.asset_dir("video_watch_daily", day))
    return {
        "rows": parquet_rows(events.files),
        "rows_out": staged.num_rows,
        "plays_in_windows": plays,
        "videos_read": parquet_rows(videos.files),
        "unknown_events": unknown,
        "events_from": source,
    }


def stage_labels(lake: Lake, layout: Layout) -> dict[str, Any]:
    """`video_labels_7d`[D] from the partials of D..D+7 (no daily stats in this lake)."""
    day = layout.label_day
    source = choose_label_source(lake, day, prefer_daily_stats=True)
    window = files_of(lake, "video_watch_daily", list(source.days))
    with duck() as con:
        files_of(lake, "raw_videos", [day]).register(con, "videos", VIDEOS_SCHEMA)
        result = labels_for_day(con, lake, day, source, window)
        bad = label_range_violations(con, "labels", result.labels)
    ok = not bad and result.days_read == list(source.days)
    lake.write_partitions("video_labels_7d", result.labels, [day], publish=ok)
    return {"rows": parquet_rows(window.files), "rows_out": result.labels.num_rows, "ok": ok}


def stage_creator_features(lake: Lake, layout: Layout) -> dict[str, Any]:
    """`creator_features`[F]: raw_videos F-365..F, labels of the days closed before F."""
    day = layout.score_day

    def days(asset: str, first: str, last: str) -> list[str]:
        return [d for d in lake.list_days(lake.asset_dir(asset)) if first <= d <= last]

    history = files_of(lake, "raw_videos", days("raw_videos", shift(day, -HISTORY_DAYS), day))
    labels = files_of(
        lake,
        "video_labels_7d",
        days("video_labels_7d", shift(day, -HISTORY_DAYS), shift(day, -(WINDOW_DAYS + 1))),
    )
    today = PartitionFiles(lake, "raw_videos", (day,), history.files[-1:])
    with duck() as con:
        today.register(con, "videos", VIDEOS_SCHEMA)
        history.register(con, "history_videos", VIDEOS_SCHEMA)
        labels.register(con, "history_labels", LABELS_SCHEMA)
        features = creator_features(con, day)
        leaks = point_in_time_violations(con, "features", features, day)
    lake.write_partitions("creator_features", features, [day], publish=leaks == 0)
    return {
        "rows": features.num_rows,
        "rows_out": features.num_rows,
        "history_videos": parquet_rows(history.files),
        "history_labels": parquet_rows(labels.files),
    }


def stage_scoring(lake: Lake, layout: Layout) -> dict[str, Any]:
    """`quality_scores`[F] with model v1, loaded as `registry.load_record` loads a record."""
    from vq_assets.core.model import registry, tasks
    from vq_assets.core.model.features import joined_batches
    from vq_assets.core.serving.scores import score_batches
    from vq_assets.defs.serving import ScoringConfig

    day = layout.score_day
    with duck() as con:
        files_of(lake, "raw_videos", [day]).register(con, "videos", VIDEOS_SCHEMA)
        files_of(lake, "video_embeddings", [day]).register(con, "embeddings")
        files_of(lake, "creator_features", [day]).register(con, "creator")
        videos = con.sql("SELECT count(*) FROM videos").fetchall()[0][0]
        hashes = registry.file_sha256(Path(registry.lake_model_dir(lake, 1)))
        model = registry.load_version(lake, 1, hashes)
        batches = joined_batches(con, with_labels=False, batch_rows=ScoringConfig().batch_rows)
        scores = score_batches(batches, model, 1, {})
    have = [t for t in tasks.catalogue() if t.name in model.config.tasks]
    finite = all(np.isfinite(scores[t.prediction].to_numpy()).all() for t in have)
    complete = finite and scores.num_rows == videos
    lake.write_partitions("quality_scores", scores, [day], publish=complete)
    return {"rows": videos, "rows_out": scores.num_rows}


def stage_flywheel(lake: Lake, layout: Layout) -> dict[str, Any]:
    """`flywheel_sampling_weights`[F] with FlywheelConfig's defaults and no flag files."""
    import pyarrow as pa

    from vq_assets.core.serving import flywheel

    day = layout.score_day
    scores = files_of(lake, "quality_scores", [day]).read()
    if lake.list_files(lake.landing_dir("video_flags", day)):
        raise RuntimeError("the scale lake has no video_flags")
    excluded = flywheel.exclusions(scores["video_id"], None, [])
    weights, _ = flywheel.sampling_weights(
        scores["quality_score"].to_numpy(),
        scores["creator_id"],
        temperature=1.0,
        epsilon=0.05,
        creator_cap=0.05,
        excluded=excluded,
    )
    table = scores.select(["video_id", "creator_id", "quality_score", "model_version"])
    table = table.append_column("excluded", pa.array(excluded)).append_column(
        "sampling_weight", pa.array(weights, pa.float64())
    )
    lake.write_partitions("flywheel_sampling_weights", table, [day])
    return {"rows": scores.num_rows, "rows_out": table.num_rows, "weight_sum": weights.sum()}


def stage_generate(lake: Lake, layout: Layout) -> dict[str, Any]:
    written = write_landing(lake, layout)
    embedded = write_embeddings(lake, layout)
    params = write_model(lake, layout.seed)
    return {"rows": written["watch_events"], **written, "embeddings": embedded, "params": params}


def stage_setup_videos(lake: Lake, layout: Layout) -> dict[str, Any]:
    reports = [ingest(lake, "videos", layout.day(k)) for k in range(8)]
    return {"rows": sum(r["rows"] for r in reports)}


def stage_setup_partials(lake: Lake, layout: Layout) -> dict[str, Any]:
    reports = [partials(lake, layout.day(k)) for k in range(7)]
    return {"rows": sum(r["rows"] for r in reports)}


def stage_gpu(lake: Lake, layout: Layout) -> dict[str, Any]:
    rate, name = blip_images_per_s()
    return {"rows": 0, "images_per_s": rate, "gpu": name}


StageFn = Callable[[Lake, Layout], dict[str, Any]]
STAGES: dict[str, StageFn] = {
    "ingest_videos": lambda lake, lt: ingest(lake, "videos", lt.score_day),
    "ingest_events": lambda lake, lt: ingest(lake, "watch_events", lt.event_day),
    "partials": lambda lake, lt: partials(lake, lt.event_day),
    "labels": stage_labels,
    "creator_features": stage_creator_features,
    "scoring": stage_scoring,
    "flywheel": stage_flywheel,
}
OTHER: dict[str, StageFn] = {
    "generate": stage_generate,
    "setup_videos": stage_setup_videos,
    "setup_partials": stage_setup_partials,
    "gpu": stage_gpu,
    "idle": lambda lake, lt: {"rows": 0},
    "idle_torch": lambda lake, lt: {"rows": 0},
}
# These import torch and the model code before the clock: their baseline is idle_torch's.
TORCH = {"scoring", "flywheel", "generate", "gpu", "idle_torch"}
# What the timed stages write (asset, Layout day): removed before they run.
OUTPUTS = (
    ("raw_videos", "score_day"),
    ("watch_events", "event_day"),
    ("video_watch_daily", "event_day"),
    ("video_labels_7d", "label_day"),
    ("creator_features", "score_day"),
    ("quality_scores", "score_day"),
    ("flywheel_sampling_weights", "score_day"),
)


def worker(stage: str, lake_root: Path, layout: Layout) -> None:
    """Run one stage; its report (a JSON line) goes to stdout."""
    if stage in TORCH:  # imported before the clock, as the module's own imports are
        import torch

        from vq_assets.core.model import registry  # noqa: F401
        from vq_assets.core.serving import flywheel, scores  # noqa: F401

        if os.environ.get(THREADS_ENV):
            torch.set_num_threads(int(os.environ[THREADS_ENV]))
    wall, cpu = time.perf_counter(), time.process_time()
    report = (STAGES | OTHER)[stage](Lake.local(lake_root), layout)
    report |= {
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,  # every thread of this process: DuckDB's too
        "peak_rss_mib": peak_rss_mib(),
    }
    print(json.dumps(report, default=float))


# --------------------------------------------------------------------------------------------
# the parent: watchdog, lake, report


def measure(stage: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Run `stage` in a fresh worker; kill it past --rss-cap or when the machine runs short."""
    cmd = [sys.executable, __file__, "--worker", stage, "--lake", str(args.lake_root)]
    cmd += ["--videos", str(args.videos), "--events", str(args.events), "--seed", str(args.seed)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    seen_rss, spill, killed = watch(proc, args.rss_cap * 2**30, Path(env["VQ_DUCKDB_TEMP_DIR"]))
    out = proc.stdout.read() if proc.stdout else ""
    if killed or proc.returncode:
        return {
            "failed": killed or f"exit {proc.returncode}",
            "wall_s": time.perf_counter() - started,
            "cpu_s": float("nan"),
            "peak_rss_mib": seen_rss / 2**20,
            "spill_mib": spill / 2**20,
            "rows": 0,
        }
    return json.loads(out.strip().splitlines()[-1]) | {"spill_mib": spill / 2**20}


def prepare_lake(args: argparse.Namespace, env: dict[str, str], layout: Layout) -> None:
    """Generate and set up the lake, unless `root` holds one made with the same parameters."""
    root: Path = args.lake_root
    stamp = root / "bench_scale.json"
    if stamp.is_file() and stamp.read_text() == layout.stamp():
        print(f"reusing the lake at {root}")
        return
    if root.exists() and any(root.iterdir()) and not stamp.is_file():
        raise SystemExit(f"{root} is not empty and holds no scale lake: choose another --keep")
    for sub in ("landing", "assets", "quarantine", "models", ".rejected"):
        shutil.rmtree(root / sub, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    print("setup (untimed for the checks; each in its own worker):")
    for stage in ("generate", "setup_videos", "setup_partials"):
        r = measure(stage, args, env)
        print(
            f"  {stage:15s} {r['wall_s']:7.1f} s wall {r['cpu_s']:7.1f} s CPU "
            f"peak RSS {r['peak_rss_mib']:6.0f} MiB  {r['rows']:>12,} rows",
            flush=True,
        )
        if "failed" in r:
            raise SystemExit(f"setup stage {stage} failed: {r['failed']}")
    stamp.write_text(layout.stamp())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=1_000_000, help="new videos a day")
    p.add_argument("--events", type=int, default=100_000_000, help="watch events a day")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", type=Path, help="lake folder to create or reuse (default: temp)")
    p.add_argument("--memory-limit", default=os.environ.get("VQ_DUCKDB_MEMORY_LIMIT", "4GB"))
    p.add_argument("--temp-dir", type=Path, help="DuckDB spill folder (default: temp)")
    p.add_argument("--threads", type=int, help="DuckDB and torch threads (default: all cores)")
    p.add_argument("--rss-cap", type=float, default=16.0, help="GiB; a worker past it is killed")
    p.add_argument("--target-events", type=float, default=1e9, help="events a day to project")
    p.add_argument("--frames", type=int, default=8, help="frames embedded per video")
    p.add_argument("--caption-tokens", type=int, default=32)
    p.add_argument("--gpu-images-per-s", type=float, help="override the GPU rate")
    p.add_argument("--worker", choices=[*STAGES, *OTHER], help=argparse.SUPPRESS)
    p.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    layout = Layout(START, args.videos, args.events, args.seed)
    if args.worker:
        worker(args.worker, args.lake, layout)
        return 0
    try:  # refuse a bad value before generating anything
        limit_bytes(args.memory_limit)
    except ValueError as e:
        p.error(str(e))
    work = Path(tempfile.mkdtemp(prefix="vq-bench-scale-"))
    try:
        return run(args, layout, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, layout: Layout, work: Path) -> int:
    import pyarrow as pa

    args.lake_root = (args.keep or work / "lake").resolve()
    spill = (args.temp_dir or work / "spill").resolve()
    spill.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env |= {"VQ_DUCKDB_MEMORY_LIMIT": args.memory_limit, "VQ_DUCKDB_TEMP_DIR": str(spill)}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # bench/RESULTS.md "train": spinning collapses
    if args.threads:
        env[THREADS_ENV] = str(args.threads)
    free = shutil.disk_usage(spill).free / 2**30
    print(
        f"{args.videos:,} videos and {args.events:,} events a day; DuckDB memory_limit "
        f"{args.memory_limit} ({limit_bytes(args.memory_limit) / 2**30:.2f} GiB), spill to "
        f"{spill} ({free:.0f} GiB free), threads {args.threads or 'default'}, "
        f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}\nduckdb {duckdb.__version__}, pyarrow "
        f"{pa.__version__}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}, lake {args.lake_root}",
        flush=True,
    )
    # Measured at 100M events / 1M videos: ~14 B/event per copy of a day, ~320 B/event of
    # ingest spill (at 4GB), ~2 KB/video of embeddings.
    need = (args.events * 350 + args.videos * 2_500) / 2**30
    if need > free:
        print(f"WARNING: this run may need ~{need:.0f} GiB of disk; {free:.0f} GiB are free")
    prepare_lake(args, env, layout)
    base = {"idle": measure("idle", args, env), "idle_torch": measure("idle_torch", args, env)}
    limit_mib = limit_bytes(args.memory_limit) / 2**20
    print(
        f"interpreter baselines (idle worker, same imports): "
        f"{base['idle']['peak_rss_mib']:.0f} MiB (DuckDB stages), "
        f"{base['idle_torch']['peak_rss_mib']:.0f} MiB (torch stages)\n"
    )
    # Every run times its stages from their inputs: no output of an earlier run is read.
    lake = Lake.local(args.lake_root)
    for asset, day in OUTPUTS:
        lake.delete_partition(lake.asset_dir(asset, getattr(layout, day)))
    head = f"{'stage':17s} {'wall s':>8s} {'CPU s':>8s} {'rows':>12s} {'rows/s':>11s}"
    print(f"{head} {'rows/CPU-s':>11s} {'peak MiB':>9s} {'spill MiB':>9s}  check")
    reports: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        r = reports[name] = measure(name, args, env)
        baseline = base["idle_torch" if name in TORCH else "idle"]["peak_rss_mib"]
        r["bound_mib"] = limit_mib + baseline
        r["within"] = "failed" not in r and r["peak_rss_mib"] <= r["bound_mib"]
        verdict = "ok" if r["within"] else "EXCEEDED"
        print(
            f"{name:17s} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['rows']:12,} "
            f"{r['rows'] / r['wall_s']:11,.0f} {r['rows'] / r['cpu_s']:11,.0f} "
            f"{r['peak_rss_mib']:9.0f} {r['spill_mib']:9.0f}  peak <= {limit_mib:.0f} + "
            f"{baseline:.0f} MiB: {verdict} {r.get('failed', '')}",
            flush=True,
        )
        shown = ("wall_s", "cpu_s", "rows", "peak_rss_mib", "spill_mib", "bound_mib", "within")
        extras = {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}
        print(f"{'':17s} {json.dumps({k: v for k, v in extras.items() if k not in shown})}")
    report_day(reports, args)
    project(reports, args, measure("gpu", args, env))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def report_day(reports: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    wall = sum(r["wall_s"] for r in reports.values())
    cpu = sum(r["cpu_s"] for r in reports.values())
    peak = max(r["peak_rss_mib"] for r in reports.values())
    within = all(r["within"] for r in reports.values())
    print(
        f"\nthe day ({args.videos:,} videos, {args.events:,} events), stage after stage: "
        f"{wall:,.0f} s wall ({wall / 864:.1f}% of a day), {cpu:,.0f} s CPU, peak "
        f"{peak / 1024:.2f} GiB; memory within bound in every stage: {within}"
    )


def project(reports: dict[str, dict[str, Any]], args: argparse.Namespace, gpu: dict) -> None:
    """Each stage's CPU s, wall s, spill and memory scaled to --target-events, videos in
    proportion. A stage within its bound stays there (DuckDB spills); past it, the memory that
    DuckDB does not bound grows with rows: at least what lies above the bound (if DuckDB used
    all its limit), at most all that lies above the baseline (if it used none)."""
    scale = args.target_events / args.events
    videos = args.videos * scale
    print(
        f"\nprojection to {args.target_events:,.0f} events and {videos:,.0f} videos a day "
        f"(x{scale:g}; rows, CPU, wall and spill scale linearly)"
    )
    print(
        f"{'stage':17s} {'B/row':>7s} {'CPU h':>7s} {'node h':>7s} {'CPU/wall':>8s} "
        f"{'spill GiB':>9s} {'memory GiB':>13s}"
    )
    cpu_h = wall_h = 0.0
    limit_mib = limit_bytes(args.memory_limit) / 2**20
    memory = (0.0, 0.0)
    for name, r in reports.items():
        if "failed" in r:  # no rate to project from
            print(f"{name:17s} {r['failed']}")
            continue
        peak, bound = r["peak_rss_mib"], r["bound_mib"]
        base = bound - limit_mib
        per_row = (peak - base) * 2**20 / max(r["rows"], 1)
        lo, hi = (
            (peak, peak)
            if r["within"]
            else (bound + (peak - bound) * scale, base + (peak - base) * scale)
        )
        cpu_h, wall_h = cpu_h + r["cpu_s"] * scale / 3600, wall_h + r["wall_s"] * scale / 3600
        memory = (max(memory[0], lo / 1024), max(memory[1], hi / 1024))
        span = f"{lo / 1024:.1f}" if lo == hi else f"{lo / 1024:.0f}-{hi / 1024:.0f}"
        print(
            f"{name:17s} {per_row:7,.0f} {r['cpu_s'] * scale / 3600:7.2f} "
            f"{r['wall_s'] * scale / 3600:7.2f} {r['cpu_s'] / r['wall_s']:8.2f} "
            f"{r['spill_mib'] * scale / 1024:9.0f} {span:>13s}"
        )
    done = [n for n in reports if "failed" not in reports[n]] or list(reports)
    longest = max(done, key=lambda n: reports[n]["cpu_s"])
    print(
        f"{'total':17s} {'':7s} {cpu_h:7.2f} {wall_h:7.2f} {'':8s} {'':9s} "
        f"{memory[0]:.1f}{f'-{memory[1]:.0f}' if memory[1] > memory[0] else ''} (largest)\n"
        f"cores for the day's CPU work in 24 h: {math.ceil(cpu_h / 24)}, in 1 h: "
        f"{math.ceil(cpu_h)}, if every stage spread over cores perfectly (failed stages left "
        f"out); one that does not takes its CPU h whatever the cores (longest: {longest}, "
        f"{reports[longest]['cpu_s'] * scale / 3600:.2f} h). 'node h': this "
        f"{os.cpu_count()}-core node, stage after stage"
    )
    rate, source = PUBLISHED_GPU
    if args.gpu_images_per_s:
        rate, source = args.gpu_images_per_s, "--gpu-images-per-s"
    elif gpu.get("images_per_s"):
        rate, source = gpu["images_per_s"], f"measured here: {gpu['gpu']}, bf16, random BLIP base"
    # The pipeline embeds the cover only when the video cannot be decoded: 8 images a video.
    per_video = args.frames + args.caption_tokens / VIT_TOKENS
    for n in (args.videos, videos):
        print(
            f"embeddings of {n:,.0f} videos: {n:,.0f} x ({args.frames} frames + "
            f"{args.caption_tokens}/{VIT_TOKENS} caption) / {rate:,.0f} images/s / 3600 = "
            f"{n * per_video / rate / 3600:,.1f} GPU-hours ({source})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
