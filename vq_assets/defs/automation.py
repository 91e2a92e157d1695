"""Automation: the jobs, a sensor on the landing zone's markers, the daily and weekly schedules."""

import datetime as dt
import json

import dagster as dg

from vq_assets.core.labels import daily_stats
from vq_assets.core.labels.source import events_landed
from vq_assets.core.labels.windows import WINDOW_DAYS, shift
from vq_assets.core.model import registry
from vq_assets.partitions import START_DATE, daily, label_days
from vq_assets.resources import LakeResource

FEATURE_ASSETS = [
    "raw_videos",
    "watch_events",
    "video_watch_daily",
    "cowatch_pairs",
    "video_embeddings",
    "creator_features",
    "retrieval_prior",
]
# What a lake without watch events (daily rollups only) cannot materialize; its chain skips them.
EVENT_ASSETS = ["watch_events", "video_watch_daily", "cowatch_pairs"]
SCORING_ASSETS = ["quality_scores", "flywheel_sampling_weights"]
LABEL_ASSETS = ["video_labels_7d"]
LIFT_ASSETS = ["flywheel_lift"]
RETRAIN_ASSETS = ["training_set", "quality_model", "model_evaluation"]
# Co-watch embeddings: weekly beside the quality model; daily once a week's tower exists.
CDML_ASSETS = ["cdml_model", "cdml_evaluation"]
RELATED_ASSETS = ["video_cdml_embeddings", "related_videos"]

daily_chain_job = dg.define_asset_job(
    "daily_chain",
    selection=FEATURE_ASSETS + SCORING_ASSETS + RELATED_ASSETS,
    # Runs with a GPU step carry this tag: the production run queue limits them (deploy/).
    tags={"vq/gpu": "true"},
    description="A landed day: ingest, partials, co-watch, embeddings, creator features, "
    "scores, weights, CDML vectors and related videos.",
)
labels_job = dg.define_asset_job(
    "labels",
    selection=LABEL_ASSETS + LIFT_ASSETS,
    description="A creation day whose 7-day window has closed: labels, then the flywheel lift.",
)
retrain_job = dg.define_asset_job(
    "retrain",
    selection=RETRAIN_ASSETS,
    tags={"vq/gpu": "true"},
    description="The week's training set, model (through the promotion gate) and evaluation.",
)
cdml_job = dg.define_asset_job(
    "cdml",
    selection=CDML_ASSETS,
    tags={"vq/gpu": "true"},
    description="The week's CDML tower (co-watch embeddings) and its held-out evaluation.",
)

daily_schedule = dg.build_schedule_from_partitioned_job(
    daily_chain_job,
    hour_of_day=2,
    description="For deployments where each day lands on time: run yesterday's chain at 02:00.",
)


@dg.schedule(
    job=retrain_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    description="Weekly retraining at the start of each week (Sunday 03:00 UTC).",
)
def retrain_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    week = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=f"retrain-{week}", partition_key=week)


@dg.schedule(
    job=cdml_job,
    cron_schedule="0 4 * * 0",
    execution_timezone="UTC",
    description="Weekly CDML tower at the start of each week (Sunday 04:00 UTC), on lakes with "
    "watch events (co-watch needs them).",
)
def cdml_schedule(context: dg.ScheduleEvaluationContext, lake: LakeResource):
    week = context.scheduled_execution_time.date().isoformat()
    if not events_landed(lake.get_lake()):
        return dg.SkipReason("the lake has no watch_events landing: no co-watch to learn from")
    return dg.RunRequest(run_key=f"cdml-{week}", partition_key=week)


def feature_assets(events: bool) -> list[str]:
    """The daily chain's feature assets for a lake with (or without) watch events."""
    return FEATURE_ASSETS if events else [a for a in FEATURE_ASSETS if a not in EVENT_ASSETS]


def landed_days(lake, *, events: bool = True) -> list[str]:
    """Days whose videos and watch events both carry their `_SUCCESS` marker; on a lake without
    watch events (`events=False`), days whose videos do."""
    tables = ["videos", "watch_events"] if events else ["videos"]
    days = set(lake.list_days(lake.path("landing", "videos")))
    for table in tables[1:]:
        days &= set(lake.list_days(lake.path("landing", table)))
    return sorted(
        d for d in days if d >= START_DATE and all(lake.day_complete(t, d) for t in tables)
    )


def daily_stats_days(lake) -> set[str]:
    """Days of `video_daily_stats` that carry their `_SUCCESS` marker."""
    days = lake.list_days(lake.path("landing", daily_stats.TABLE))
    return {d for d in days if lake.day_complete(daily_stats.TABLE, d)}


def stray_landing_folders(lake) -> list[str]:
    """`dt=` folders of the landing zone that are no day (`dt=2026-03-07.bak`): never requested,
    named by every tick until someone removes them."""
    return [
        uri
        for table in ("videos", "watch_events", daily_stats.TABLE)
        for uri in lake.stray_partitions(lake.path("landing", table))
    ]


def first_model_week(lake) -> str | None:
    """The first week whose `quality_model` passed the promotion gate: days from then on can be
    scored (`quality_scores` uses the latest promoted model as of its day), earlier days never."""
    promoted = registry.promoted_records(lake)
    return promoted[0].week if promoted else None


def first_cdml_week(lake) -> str | None:
    """The first week with a CDML tower: days from then on get vectors and related lists."""
    weeks = lake.list_days(lake.asset_dir("cdml_model"))
    return weeks[0] if weeks else None


def plan_requests(
    landed: list[str],
    partials_done: set[str],
    cursor: dict[str, list[str]],
    *,
    weights_done: set[str] = frozenset(),
    scoring_from: str | None = None,
    related_from: str | None = None,
    events: bool = True,
    videos_done: set[str] = frozenset(),
    stats_landed: set[str] = frozenset(),
) -> tuple[list[dg.RunRequest], dict[str, list[str]]]:
    """Run requests for newly landed days and newly closable label days, and the next cursor.

    A day is requested once (the cursor remembers it, and the run key would deduplicate it
    anyway); a day that lands late is picked up whenever its markers appear. A day whose
    markers land before the day is over (its daily partition does not exist yet) waits until
    it is, rather than failing the tick. The chain scores a day only from `scoring_from` (the
    first promoted model's week) on, and gets CDML vectors and related videos from
    `related_from` (the first CDML tower's week) on. Label day L is requested once the
    partials of event days L..L+7 are all materialized, with the flywheel lift when L's
    sampling weights exist.

    On a lake without watch events (`events=False`) the chain leaves out `EVENT_ASSETS`, and
    label day L is requested once its videos are ingested (`videos_done`) and the daily stats of
    L..L+6 have landed (`stats_landed`): those are what its labels are made from.
    """
    chain = set(cursor.get("chain", []))
    labelled = set(cursor.get("labels", []))
    requests = []
    last_day = daily.get_last_partition_key()
    for day in landed:
        if day in chain or last_day is None or day > last_day:
            continue
        scoring = SCORING_ASSETS if scoring_from is not None and day >= scoring_from else []
        if related_from is not None and day >= related_from:
            scoring = scoring + RELATED_ASSETS
        requests.append(
            dg.RunRequest(
                run_key=f"chain-{day}",
                job_name="daily_chain",
                partition_key=day,
                asset_selection=[dg.AssetKey(a) for a in feature_assets(events) + scoring],
            )
        )
        chain.add(day)
    last_label_day = label_days.get_last_partition_key()

    def closable(day: str) -> bool:
        if events:
            return all(shift(day, i) in partials_done for i in range(WINDOW_DAYS + 1))
        return day in videos_done and all(shift(day, i) in stats_landed for i in range(WINDOW_DAYS))

    for day in sorted(partials_done if events else videos_done):
        if day in labelled or last_label_day is None or day > last_label_day:
            continue
        if closable(day):
            lift = LIFT_ASSETS if day in weights_done else []
            requests.append(
                dg.RunRequest(
                    run_key=f"labels-{day}",
                    job_name="labels",
                    partition_key=day,
                    asset_selection=[dg.AssetKey(a) for a in LABEL_ASSETS + lift],
                )
            )
            labelled.add(day)
    return requests, {"chain": sorted(chain), "labels": sorted(labelled)}


@dg.sensor(
    jobs=[daily_chain_job, labels_job],
    minimum_interval_seconds=60,
    description="Watches the landing zone's _SUCCESS markers; requests each newly landed day's "
    "chain, and the labels of every creation day whose window's partials are all in (on a lake "
    "without watch events: whose 7 days of video_daily_stats have landed).",
)
def landing_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    instance, lk = context.instance, lake.get_lake()
    events = events_landed(lk)

    def done(asset: str) -> set[str]:
        return set(instance.get_materialized_partitions(dg.AssetKey(asset)))

    requests, next_cursor = plan_requests(
        landed_days(lk, events=events),
        done("video_watch_daily") if events else set(),
        cursor,
        weights_done=done("flywheel_sampling_weights"),
        scoring_from=first_model_week(lk),
        related_from=first_cdml_week(lk),
        events=events,
        videos_done=set() if events else done("raw_videos"),
        stats_landed=set() if events else daily_stats_days(lk),
    )
    if not events:
        # Said on every tick: the chain leaves the event assets out on purpose.
        context.log.info(
            "the lake has no watch_events landing: the daily chain skips "
            f"{', '.join(EVENT_ASSETS)}, labels come from {daily_stats.TABLE}"
        )
    stray = stray_landing_folders(lk)
    ignored = ""
    if stray:
        # Shown where an operator looks: the tick's log, the cursor in the UI, the skip reason.
        context.log.warning(f"ignoring landing folders that are no day: {', '.join(stray)}")
        next_cursor["stray_folders"] = stray
        ignored = f"; ignoring {len(stray)} folder(s) that are no day: {', '.join(stray)}"
    context.update_cursor(json.dumps(next_cursor))
    if not requests:
        return dg.SkipReason(f"no new day landed ({dt.datetime.now(dt.UTC):%H:%M} UTC){ignored}")
    return requests


defs = dg.Definitions(
    jobs=[daily_chain_job, labels_job, retrain_job, cdml_job],
    schedules=[daily_schedule, retrain_schedule, cdml_schedule],
    sensors=[landing_sensor],
)
