"""The flywheel A/B (DESIGN §7): per creation day, once its windows have closed, each arm's
outcomes on the day's new videos, the differences with intervals, and the blocking guardrails.

It runs only for a day with an arm assignment, `<lake>/landing/experiment_arms/dt=D/*.parquet`
(user_id, arm), written by whatever split the users (`experiment.assign_arm`); no schedule or
sensor requests it, since most days have no experiment. Launch the `experiment` job for a day.
"""

import datetime as dt
import io

import dagster as dg
import mlflow
from PIL import Image

from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.model import registry
from vq_assets.core.serving import experiment, experiment_report
from vq_assets.core.serving.experiment import ARMS_TABLE
from vq_assets.partitions import EVENT_DAYS_OF_LABEL_DAY, label_days
from vq_assets.report import inline_png
from vq_assets.resources import LakeResource, MlflowResource

MLFLOW_KIND = "flywheel_experiment"
TREND_DAYS = 28  # creation days the trend plot shows, up to the partition's


class ExperimentConfig(dg.Config):
    # A new video is "discoverable" once it reaches this many plays within its 7 days.
    discoverable_plays: int = 10
    resamples: int = 1000  # user-level bootstrap draws per difference
    seed: int = 0
    # Guardrails, in absolute units of treatment - control (point estimates): how far each may
    # move the wrong way before the blocking check fails.
    skip_rate_max_rise: float = 0.005
    gini_max_rise: float = 0.02
    coverage_max_fall: float = 0.02
    flagged_exposure_max_rise: float = 0.0
    discoverable_max_fall: float = 0.02


@dg.asset(
    partitions_def=label_days,
    io_manager_key="lake_io",
    group_name="serving",
    kinds={"duckdb", "parquet", "mlflow"},
    ins={
        "raw_videos": dg.AssetIn(),
        "watch_events": dg.AssetIn(partition_mapping=EVENT_DAYS_OF_LABEL_DAY),
    },
    check_specs=[
        dg.AssetCheckSpec(
            "guardrails",
            asset="flywheel_experiment",
            blocking=True,
            description="Treatment does not regress skip rate, exposure concentration, creator "
            "coverage, flagged-video exposure or the discoverable corpus beyond the configured "
            "tolerances, on the cold-start impressions nor over the 7-day windows.",
        )
    ],
)
def flywheel_experiment(
    context: dg.AssetExecutionContext,
    config: ExperimentConfig,
    lake: LakeResource,
    mlflow_tracking: MlflowResource,
    raw_videos: PartitionFiles,
    watch_events: PartitionFiles,
):
    """Per arm, on the videos created on D, over their creation day's impressions (the cold
    starts) and their 7-day windows: watch time per impression, skip, full-watch and
    engagement rates, discoverable corpus, creator coverage, exposure Gini, flagged exposure;
    treatment - control with 95% intervals from a user-level bootstrap; the trend over the
    experiment's days so far."""
    day, lk = context.partition_key, lake.get_lake()
    arm_files = lk.list_files(lk.landing_dir(ARMS_TABLE, day))
    if not arm_files:
        raise dg.Failure(
            f"no arm assignment for {day}: write (user_id, arm) rows to "
            f"{lk.uri(lk.landing_dir(ARMS_TABLE, day))} first"
        )
    pooled = experiment_report.evaluate_files(
        lk,
        [day],
        raw_videos.files,
        watch_events.files,
        arm_files,
        discoverable_plays=config.discoverable_plays,
        guardrails=experiment.Guardrails(
            config.skip_rate_max_rise,
            config.gini_max_rise,
            config.coverage_max_fall,
            config.flagged_exposure_max_rise,
            config.discoverable_max_fall,
        ),
        resamples=config.resamples,
        seed=config.seed,
    )
    table = pooled.table()
    trend = _trend(lk, day, table)
    with registry.tracking(mlflow_tracking.tracking_uri, mlflow_tracking.artifact_root):
        run_id = _log_mlflow(day, table, trend)
    first = next(iter(pooled.results.values()))
    yield dg.Output(
        table,
        metadata={
            "interval": first.interval,
            "users": dg.MetadataValue.json(first.users),
            "impressions": dg.MetadataValue.json(
                {s: r.impressions for s, r in pooled.results.items()}
            ),
            "differences": dg.MetadataValue.md(experiment_report.markdown(table)),
            "plot.trend": dg.MetadataValue.md(inline_png(trend, "trend")),
            "mlflow_run_id": run_id,
            # Numbers, so the UI's plots show each difference across the partitions.
            **{
                f"{r['scope']}.{r['metric']}.difference": float(r["difference"])
                for r in table.to_pylist()
            },
        },
    )
    yield dg.AssetCheckResult(
        check_name="guardrails",
        passed=pooled.passed,
        metadata={
            (g.name if scope == "cold_start" else f"{scope}.{g.name}"): g.reason
            for scope, r in pooled.results.items()
            for g in r.guardrails
        },
    )


def _trend(lk, day: str, table) -> bytes:
    """The trend plot over the earlier materialised days of the experiment and this one."""
    folder = lk.asset_dir("flywheel_experiment")
    days = [d for d in lk.list_days(folder) if d < day][-(TREND_DAYS - 1) :]
    tables = [
        lk.read_table(f)
        for d in days
        for f in lk.list_files(lk.asset_dir("flywheel_experiment", d))[:1]
    ]
    return experiment_report.trend_png([*days, day], [*tables, table])


def _log_mlflow(day: str, table, trend: bytes) -> str:
    """Into one MLflow run for all the experiment's days: each difference as a metric at the
    day's step (MLflow charts the trend), the day's table and the trend plot."""
    found = mlflow.search_runs(
        filter_string=f"tags.`vq.kind` = '{MLFLOW_KIND}'", max_results=1, output_format="list"
    )
    step = dt.date.fromisoformat(day).toordinal() - dt.date(1970, 1, 1).toordinal()
    with mlflow.start_run(
        run_id=found[0].info.run_id if found else None,
        run_name=None if found else "flywheel-experiment",
        tags={"vq.kind": MLFLOW_KIND},
    ) as run:
        for r in table.to_pylist():
            for k in ("difference", "ci_low", "ci_high"):
                if r[k] == r[k]:  # MLflow refuses NaN in some stores
                    mlflow.log_metric(f"{r['scope']}.{r['metric']}.{k}", r[k], step=step)
        mlflow.log_table(table.to_pandas(), f"flywheel_experiment/dt={day}.json")
        mlflow.log_image(Image.open(io.BytesIO(trend)), "flywheel_experiment/trend.png")
        return run.info.run_id


experiment_job = dg.define_asset_job("experiment", selection=["flywheel_experiment"])

defs = dg.Definitions(assets=[flywheel_experiment], jobs=[experiment_job])
