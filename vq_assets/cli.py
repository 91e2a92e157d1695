"""The `vq` command: simulate a platform, replay the chain, run the demo, open the UI."""

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vq_assets.core.embeddings.registry import DEFAULT_IMAGE_ENCODER

REPO_ROOT = Path(__file__).resolve().parents[1]


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def _lake(root: str):
    from dagster_aws.s3 import S3Resource

    from vq_assets.resources import LakeResource

    return LakeResource(root=root, s3=S3Resource()).get_lake()


def _default_lake() -> str:
    from vq_assets.resources import default_lake_root

    return default_lake_root()


def cmd_simulate(args: argparse.Namespace) -> int:
    from vq_assets.core.sources.simulator import simulate

    lake = _lake(args.lake)
    summary = simulate(
        lake,
        args.start,
        args.days,
        args.videos_per_day,
        args.seed,
        mean_plays=args.mean_plays,
        media=not args.no_media,
        counters=args.counters.split(",") if args.counters else None,
        progress=print,
    )
    landed = (
        f"{summary.events:,} events"
        if not args.counters
        else f"{summary.daily_stats_rows:,} video_daily_stats rows ({summary.events:,} plays)"
    )
    print(f"wrote {summary.days} days, {summary.videos:,} videos, {landed} to {lake.root}/landing")
    return 0


def _instance():
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT))
    return dg.DagsterInstance.get()


def _quiet_libraries(log_file: Path) -> None:
    """Python logging and model-loading progress bars go to the log file, not the console."""
    import logging

    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    hf_logging.disable_progress_bar()
    disable_progress_bars()


def _replay(lake_root: str, start: dt.date, end: dt.date, verbose: bool) -> None:
    # The lake resource reads VQ_LAKE (dg.EnvVar) when each run starts: set it first.
    os.environ["VQ_LAKE"] = lake_root
    from vq_assets.definitions import build_definitions
    from vq_assets.partitions import TRAIN_WEEKS
    from vq_assets.replay import Replay
    from vq_assets.resources import vq_home

    defs = build_definitions()
    instance = _instance()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log_file = Path(vq_home()) / "logs" / f"replay-{stamp}.log"
    replay = Replay(
        defs,
        instance,
        _lake(lake_root),
        train_days=7 * TRAIN_WEEKS,
        log_file=log_file,
        verbose=verbose,
    )
    if not verbose:
        _quiet_libraries(log_file)
    print(f"replaying {start}..{end} on {lake_root} (Dagster instance {instance.root_directory})")
    print(f"Dagster's step logs: {log_file} (and the Dagster UI); warnings and errors show here")
    replay.run(start.isoformat(), end.isoformat())
    print(f"replay done: {replay.runs} Dagster runs")


def cmd_run(args: argparse.Namespace) -> int:
    _replay(args.lake, args.start, args.end, args.verbose)
    return 0


def _simulated_world_settings() -> None:
    """Defaults for replaying a simulated world, each overridable from the environment."""
    # A fixed intra-op thread count: the same numbers on any machine with the same CPU kernels.
    os.environ.setdefault("VQ_TORCH_THREADS", "2")
    # The simulator's clips are 64 px and 1.5-2 s long: 4 frames at 128 px see them whole and
    # cost EfficientNet-Lite0 ~1/7 of 8 frames at its own 224 (bench/RESULTS.md).
    os.environ.setdefault("VQ_FRAMES", "4")
    os.environ.setdefault("VQ_IMAGE_SIZE", "128")
    print(
        f"image encoder {os.environ.get('VQ_IMAGE_ENCODER', DEFAULT_IMAGE_ENCODER)}: "
        f"{os.environ['VQ_FRAMES']} frames per video at {os.environ['VQ_IMAGE_SIZE']} px "
        "(VQ_IMAGE_ENCODER, VQ_FRAMES, VQ_IMAGE_SIZE)"
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Simulate the default world (unless already there), replay it, print the report."""
    _simulated_world_settings()
    lake = _lake(args.lake)
    end = args.start + dt.timedelta(days=args.days - 1)
    if not lake.day_complete("watch_events", end.isoformat()):
        cmd_simulate(args)
    _replay(args.lake, args.start, end, args.verbose)
    from vq_assets.report import demo_report

    print(demo_report(lake, REPO_ROOT))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """A closed-loop A/B of the flywheel on a simulated world, through Dagster; the report."""
    _simulated_world_settings()
    if "://" not in args.lake:
        args.lake = str(Path(args.lake).expanduser().resolve())
    os.environ["VQ_LAKE"] = args.lake  # the lake resource reads it when each run starts
    from vq_assets.closed_loop import ExperimentReplay, Plan, report
    from vq_assets.core.serving.experiment import Guardrails
    from vq_assets.core.sources.simulator.closed_loop import ClosedLoop, LoopSettings
    from vq_assets.definitions import build_definitions
    from vq_assets.partitions import START_DATE, TRAIN_WEEKS
    from vq_assets.resources import vq_home

    start = args.start or dt.date.fromisoformat(START_DATE)
    if start.isoformat() != START_DATE:
        print(
            f"vq experiment: --start {start} but VQ_START_DATE is {START_DATE}: the world "
            f"opens on the first partition; set VQ_START_DATE={start} or drop --start",
            file=sys.stderr,
        )
        return 2
    lake = _lake(args.lake)
    if lake.list_days(lake.path("landing", "watch_events")) and not lake.list_days(
        lake.path("truth", "cold_start")
    ):
        print(
            f"vq experiment: {lake.root} holds an open-loop world; use a new lake", file=sys.stderr
        )
        return 2
    settings = LoopSettings(
        cold_start_plays=args.cold_start_plays,
        treatment_share=args.treatment_share,
        salt=args.salt,
    )
    world = ClosedLoop(
        lake, start, args.videos_per_day, args.seed, media=not args.no_media, settings=settings
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log_file = Path(vq_home()) / "logs" / f"experiment-{stamp}.log"
    instance = _experiment_instance(args.lake)
    replay = ExperimentReplay(
        build_definitions(),
        instance,
        lake,
        train_days=7 * TRAIN_WEEKS,
        log_file=log_file,
        verbose=args.verbose,
        asset_config={
            "flywheel_sampling_weights": {
                "policy": args.flywheel_policy,
                "temperature": args.temperature,
                "epsilon": args.epsilon,
            },
            "flywheel_experiment": {
                "resamples": args.resamples,
                "gini_max_rise": args.gini_max_rise,
            },
        },
        world=world,
        plan=Plan(args.ab_days, args.control, args.treatment),
    )
    if not args.verbose:
        _quiet_libraries(log_file)
    print(
        f"closed-loop A/B on {lake.root}: control {args.control}, treatment {args.treatment} "
        f"(flywheel policy {args.flywheel_policy}), {args.ab_days} A/B days after the warm-up"
    )
    print(
        f"Dagster's step logs: {log_file}; the runs are in the experiment's own Dagster "
        f"instance, DAGSTER_HOME={instance.root_directory}"
    )
    ab_days = replay.run_loop(start.isoformat())
    guardrails = Guardrails(gini_max_rise=args.gini_max_rise)
    text, passed = report(
        lake, ab_days, resamples=args.resamples, seed=args.seed, guardrails=guardrails
    )
    print(text)
    return 0 if passed else 1


def _experiment_instance(lake_root: str):
    """A Dagster instance of the experiment's own, kept beside the other local state and keyed
    by its lake: a replay skips the partitions its instance has materialized, so an instance
    shared with another lake (the demo's) would skip the experiment's days. Pools as in
    dagster.yaml: one GPU step at a time."""
    import hashlib

    import dagster as dg

    from vq_assets.resources import vq_home

    key = hashlib.sha256(lake_root.encode()).hexdigest()[:12]
    home = Path(vq_home()) / "experiments" / key
    home.mkdir(parents=True, exist_ok=True)
    overrides = {"concurrency": {"pools": {"default_limit": 1}}, "telemetry": {"enabled": False}}
    return dg.DagsterInstance.local_temp(tempdir=str(home), overrides=overrides)


def cmd_import(args: argparse.Namespace) -> int:
    """Convert a public data set into the landing zone (today: KuaiRand-Pure)."""
    import dataclasses

    from vq_assets.core.sources.kuairand import import_kuairand

    summary = import_kuairand(Path(args.path), _lake(args.lake))
    for key, value in dataclasses.asdict(summary).items():
        print(f"{key:>26}: {value}")
    print(f"set VQ_START_DATE={summary.video_days[0]} to run the chain on it")
    return 0


def cmd_evaluate_real(args: argparse.Namespace) -> int:
    """Evaluate on KuaiRand-Pure with authors disjoint between train/validation/test."""
    from vq_assets.real_report import run_evaluate_real

    return run_evaluate_real(
        Path(args.kuairand),
        lake_dir=None if args.real_lake is None else Path(args.real_lake),
        seed=args.seed,
        repeats=args.repeats,
        results_path=REPO_ROOT / "bench" / "RESULTS.md" if args.write_results else None,
    )


def _mlflow() -> tuple[str, str | None]:
    """Tracking URI and artifact root: the store this deployment's assets log to."""
    import dagster as dg

    from vq_assets.resources import resources_for_deployment

    store = resources_for_deployment()["mlflow_tracking"]
    uri, root = (
        v.get_value() if isinstance(v, dg.EnvVar) else v
        for v in (store.tracking_uri, store.artifact_root)
    )
    return uri, root


def _print_sweep(result) -> None:
    import math

    def cell(value, width: int) -> str:
        return f"{value:>{width}.4f}" if isinstance(value, float) else f"{value!s:>{width}}"

    keys = list(result.best_point)
    rows = sorted(
        result.summary.to_pylist(),
        key=lambda r: r["selection_score"] if math.isfinite(r["selection_score"]) else -math.inf,
        reverse=True,
    )
    print(f"{'child run':<34} {'score':>7} {'val_loss':>9} {'epochs':>6}  " + "  ".join(keys))
    for r in rows:
        print(
            f"{r['child_run_id']:<34} {cell(r['selection_score'], 7)} "
            f"{cell(r['best_val_loss'], 9)} {cell(r['epochs_trained'], 6)}  "
            + "  ".join(str(r[k]) for k in keys)
        )
    best = result.best["child_run_id"]
    print(f"MLflow parent run {result.parent_run_id}; best child {best}: {result.best_point}")
    print(f"nothing applied; to train the weekly model with it: vq sweep --apply {best}")


def cmd_sweep(args: argparse.Namespace) -> int:
    """Sweep the model's settings on a week's training set, or apply a child's settings."""
    from vq_assets.core.model import sweep
    from vq_assets.core.model.settings import ModelShape, TrainSettings, from_arguments

    if args.apply:
        changes = sweep.apply_child(_mlflow()[0], args.apply, args.applied_file)
        for name, (before, after) in changes.items():
            print(f"{name}: {before} -> {after}")
        print(
            f"wrote {args.applied_file}: the defaults of the weekly quality_model (and of every "
            "command derived from its settings) once the code location reloads; commit it"
        )
        return 0
    lake = _lake(args.lake)
    weeks = lake.list_days(lake.asset_dir("training_set"))
    week = args.week.isoformat() if args.week else (weeks[-1] if weeks else None)
    if week not in weeks:
        print(f"vq sweep: no training_set partition {week} in {lake.root}", file=sys.stderr)
        return 1
    tracking_uri, artifact_root = _mlflow()
    result = sweep.run_sweep(
        lake.read_table(lake.asset_file("training_set", week)),
        args.space,
        shape=from_arguments(ModelShape, args),
        settings=from_arguments(TrainSettings, args),
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        name=week,
        trials=args.trials,
        seed=args.search_seed,
        params={"week": week},
        say=print,
    )
    _print_sweep(result)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the Dagster UI on 127.0.0.1 with the local instance (DAGSTER_HOME = repo root)."""
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(REPO_ROOT))
    exe = Path(sys.executable).parent / "dagster"
    argv = [str(exe), "dev", "-h", "127.0.0.1", "-p", str(args.port), "-w", "workspace.yaml"]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (instance {env['DAGSTER_HOME']})")
    os.chdir(REPO_ROOT)
    os.execve(argv[0], argv, env)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated platform's landing zone")
    p.add_argument("--lake", default=None, help="lake root (default: $VQ_LAKE or .vq/lake)")
    p.add_argument("--start", type=_date, default=_date("2026-01-01"))
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--videos-per-day", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mean-plays", type=float, default=60.0)
    p.add_argument("--no-media", action="store_true", help="skip mp4 and cover files")
    p.add_argument(
        "--counters",
        default=None,
        help="land daily rollups (video_daily_stats) with these comma-separated counters "
        "instead of watch events, e.g. plays or plays,likes,comments",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="replay the chain day by day over landed data, through Dagster")
    p.add_argument("--lake", default=None, help="lake root (default: $VQ_LAKE or .vq/lake)")
    p.add_argument("--start", type=_date, required=True)
    p.add_argument("--end", type=_date, required=True)
    p.add_argument("--verbose", action="store_true", help="print every Dagster event")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulate, replay and report (what `make demo` runs)")
    p.add_argument("--lake", default=None, help="lake root (default: $VQ_LAKE or .vq/lake)")
    p.add_argument("--start", type=_date, default=_date("2026-01-01"))
    p.add_argument("--days", type=int, default=45)
    p.add_argument("--videos-per-day", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print every Dagster event")
    p.set_defaults(func=cmd_demo, mean_plays=60.0, no_media=False, counters=None)

    p = sub.add_parser(
        "experiment",
        help="a closed-loop A/B of the flywheel on a simulated world, through Dagster",
    )
    p.add_argument("--lake", required=True, help="lake root: a new one, or this experiment's")
    p.add_argument("--start", type=_date, default=None, help="default: VQ_START_DATE")
    p.add_argument("--videos-per-day", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ab-days", type=int, default=28, help="creation days in the A/B")
    p.add_argument("--control", default="uniform", help="uniform, vq, or a lake folder")
    p.add_argument("--treatment", default="vq", help="uniform, vq, or a lake folder")
    p.add_argument("--flywheel-policy", choices=["exp", "thompson"], default="thompson")
    p.add_argument("--temperature", type=float, default=1.0, help="of the flywheel's softmax")
    p.add_argument(
        "--epsilon", type=float, default=0.5, help="the flywheel's uniform exploration floor"
    )
    p.add_argument(
        "--gini-max-rise",
        type=float,
        default=0.10,
        help="guardrail: how far the cold starts' exposure Gini may rise (a quality policy "
        "concentrates exposure by design)",
    )
    p.add_argument("--treatment-share", type=float, default=0.5, help="of viewers")
    p.add_argument("--cold-start-plays", type=float, default=12.0, help="per new video")
    p.add_argument("--salt", default="vq-flywheel", help="of the user split")
    p.add_argument("--resamples", type=int, default=1000, help="user-level bootstrap draws")
    p.add_argument("--no-media", action="store_true", help="no frames or covers")
    p.add_argument("--verbose", action="store_true", help="print every Dagster event")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("import", help="convert a public data set into the landing zone")
    p.add_argument("source", choices=["kuairand"])
    p.add_argument("path", help="the data set's folder, e.g. ../shared/data/kuairand_pure")
    p.add_argument("--lake", default=None, help="lake root (default: $VQ_LAKE or .vq/lake)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("evaluate-real", help="evaluate on KuaiRand-Pure, authors split apart")
    p.add_argument(
        "--kuairand",
        required=True,
        metavar="PATH",
        help="the data set's folder, e.g. ../shared/data/kuairand_pure",
    )
    # Not dest="lake": main() fills a None lake with $VQ_LAKE; the default here is a temp dir.
    p.add_argument(
        "--lake",
        dest="real_lake",
        metavar="DIR",
        default=None,
        help="lake to import into or read from (default: a temporary folder)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="evaluate seeds seed..seed+N-1")
    p.add_argument(
        "--write-results",
        action="store_true",
        help="write the section '## real data: KuaiRand-Pure' of bench/RESULTS.md",
    )
    p.set_defaults(func=cmd_evaluate_real)

    _add_sweep(sub)

    p = sub.add_parser("ui", help="serve the Dagster UI on 127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    return parser


def _add_sweep(sub) -> None:
    from vq_assets.core.model.settings import (
        APPLIED_FILE,
        ModelShape,
        TrainSettings,
        add_arguments,
    )

    p = sub.add_parser(
        "sweep",
        help="sweep the model's settings on a week's training set (MLflow child runs), or "
        "apply a child's settings to the weekly model",
        description="Every child trains from the settings given by the other flags (default: "
        "the weekly model's) with its point applied, and is scored on the validation days.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--space", help='JSON, setting -> values, e.g. \'{"lr": [0.001, 0.003], "width": [64]}\''
    )
    what.add_argument(
        "--apply",
        metavar="RUN_ID",
        help="write this sweep child's settings where the weekly quality_model reads its "
        "defaults from (the only way a sweep changes them)",
    )
    p.add_argument("--lake", default=None, help="lake root (default: $VQ_LAKE or .vq/lake)")
    p.add_argument("--week", type=_date, help="training_set partition (default: the latest)")
    p.add_argument("--trials", type=int, help="draw this many grid points (default: all)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the --trials draw")
    p.add_argument("--applied-file", type=Path, default=APPLIED_FILE, help=argparse.SUPPRESS)
    add_arguments(p, ModelShape)
    # Children never share a checkpoint folder; loader workers are placement.
    add_arguments(p, TrainSettings, exclude=("checkpoint_dir", "num_workers"))
    p.set_defaults(func=cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    from vq_assets.replay import ReplayError

    args = build_parser().parse_args(argv)
    if getattr(args, "lake", "unset") is None:
        args.lake = _default_lake()
    try:
        return args.func(args)
    except ReplayError as e:
        print(f"vq {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
