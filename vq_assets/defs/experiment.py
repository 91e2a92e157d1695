"""The flywheel A/B (DESIGN §7): per creation day, once its windows have closed, each arm's
outcomes on the day's new videos, the differences with intervals, and the blocking guardrails.

It runs only for a day with an arm assignment, `<lake>/landing/experiment_arms/dt=D/*.parquet`
(user_id, arm), written by whatever split the users (`experiment.assign_arm`); no schedule or
sensor requests it, since most days have no experiment. Launch the `experiment` job for a day.
"""

import dagster as dg

from vq_assets.core.lake.contract import VIDEOS_SCHEMA, WATCH_EVENTS_SCHEMA
from vq_assets.core.lake.store import PartitionFiles
from vq_assets.core.serving import experiment, flywheel
from vq_assets.partitions import EVENT_DAYS_OF_LABEL_DAY, label_days
from vq_assets.resources import DuckDBResource, LakeResource

ARMS_TABLE = "experiment_arms"


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


@dg.asset(
    partitions_def=label_days,
    io_manager_key="lake_io",
    group_name="serving",
    kinds={"duckdb", "parquet"},
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
            "coverage or flagged-video exposure beyond the configured tolerances.",
        )
    ],
)
def flywheel_experiment(
    context: dg.AssetExecutionContext,
    config: ExperimentConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    watch_events: PartitionFiles,
):
    """Per arm, on the videos created on D and their 7-day windows: watch time per impression,
    skip, full-watch and engagement rates, discoverable corpus, creator coverage, exposure Gini,
    flagged exposure; treatment - control with 95% intervals from a user-level bootstrap."""
    day, lk = context.partition_key, lake.get_lake()
    arm_files = lk.list_files(lk.landing_dir(ARMS_TABLE, day))
    if not arm_files:
        raise dg.Failure(
            f"no arm assignment for {day}: write (user_id, arm) rows to "
            f"{lk.uri(lk.landing_dir(ARMS_TABLE, day))} first"
        )
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        watch_events.register(con, "events", WATCH_EVENTS_SCHEMA)
        lk.register(con, "arms", arm_files, lk.read_table(arm_files[0]).schema)
        videos, events = experiment.day_tables(con, flywheel.flagged_ids(lk, [day]))
    result = experiment.evaluate_experiment(
        events,
        videos,
        discoverable_plays=config.discoverable_plays,
        guardrails=experiment.Guardrails(
            config.skip_rate_max_rise,
            config.gini_max_rise,
            config.coverage_max_fall,
            config.flagged_exposure_max_rise,
        ),
        resamples=config.resamples,
        seed=config.seed,
    )
    yield dg.Output(
        result.table(),
        metadata={
            "interval": result.interval,
            "users": dg.MetadataValue.json(result.users),
            "impressions": dg.MetadataValue.json(result.impressions),
            **{f"{d.metric}.difference": float(d.difference) for d in result.differences},
        },
    )
    yield dg.AssetCheckResult(
        check_name="guardrails",
        passed=result.passed,
        metadata={g.name: g.reason for g in result.guardrails},
    )


experiment_job = dg.define_asset_job("experiment", selection=["flywheel_experiment"])

defs = dg.Definitions(assets=[flywheel_experiment], jobs=[experiment_job])
