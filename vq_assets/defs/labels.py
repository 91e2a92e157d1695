"""Labels: per-event-day partials, exact 7-day labels, point-in-time creator features."""

import dagster as dg

from vq_assets.core.labels import windows as core
from vq_assets.core.labels.source import choose_label_source, events_landed, labels_for_day
from vq_assets.core.labels.windows import LABELS_SCHEMA
from vq_assets.core.lake.contract import VIDEOS_SCHEMA
from vq_assets.core.lake.store import LakeError, PartitionFiles
from vq_assets.defs.k8s import K8S_CREATOR_FEATURES_TAGS, K8S_LABELS_TAGS, K8S_WATCH_DAILY_TAGS
from vq_assets.partitions import (
    CLOSED_LABEL_DAYS,
    EVENT_DAYS_OF_LABEL_DAY,
    HISTORY_VIDEOS,
    VIDEOS_SERVED_BY_EVENT_DAY,
    daily,
    label_days,
)
from vq_assets.resources import PUBLISH, DuckDBResource, LakeResource


def skipped_without_events(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    watch_events: PartitionFiles,
    consequence: str,
) -> bool:
    """True (with a warning naming `consequence`) when an event-day asset has no events to read
    because the lake keeps no watch events at all; an event day that is merely not ingested
    yet is an error, not a skip."""
    if watch_events.files:
        return False
    if events_landed(lake.get_lake()):
        raise LakeError(
            f"watch_events is not materialized for {context.partition_key}: materialize it "
            "first (a backfill over the range does it in order)"
        )
    context.log.warning(
        f"skipped: the lake has no watch_events landing, so for {context.partition_key} "
        f"{consequence}"
    )
    return True


@dg.asset(
    op_tags=K8S_WATCH_DAILY_TAGS,
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="labels",
    kinds={"duckdb", "parquet"},
    ins={
        "raw_videos": dg.AssetIn(partition_mapping=VIDEOS_SERVED_BY_EVENT_DAY),
        # A lake without watch events has none to read; checked below otherwise.
        "watch_events": dg.AssetIn(metadata={"allow_missing": True}),
    },
    # Not materialized on a lake without watch events (its labels come from daily stats).
    output_required=False,
)
def video_watch_daily(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    watch_events: PartitionFiles,
):
    """Per video and event day E: partial label aggregates of E's events inside each video's
    own 7-day window, for the videos created on E-7..E. Each event day is scanned once."""
    if skipped_without_events(
        context, lake, watch_events, "there are no partials; labels come from video_daily_stats"
    ):
        return
    day, lk = context.partition_key, lake.get_lake()
    # Millions of rows on a large day: they stream from DuckDB into a staged file that the IO
    # manager publishes, never whole in Python.
    stage = lk.staging_path("video_watch_daily", day)
    try:
        with duckdb.connect() as con:
            raw_videos.register(con, "videos", VIDEOS_SCHEMA)
            watch_events.register(con, "events")
            staged, plays, early = core.stage_partials(con, day, stage)
            unknown = core.unknown_video_events(con)
        yield dg.Output(
            staged,
            metadata={
                "videos_with_events": staged.num_rows,
                "events_in_windows": plays,
                "events_before_created_at": early,
                "events_of_unknown_videos": unknown,
                "video_days_read": dg.MetadataValue.json(list(raw_videos.days)),
            },
        )
    finally:
        lk.discard_staged(stage)  # published by then, or failed: nothing to keep


class LabelsConfig(dg.Config):
    # Use landing/video_daily_stats (7 calendar days) when all its days are there.
    prefer_daily_stats: bool = True


@dg.asset(
    op_tags=K8S_LABELS_TAGS,
    partitions_def=label_days,
    io_manager_key="lake_io",
    group_name="labels",
    kinds={"duckdb", "parquet"},
    ins={
        "video_watch_daily": dg.AssetIn(
            partition_mapping=EVENT_DAYS_OF_LABEL_DAY,
            # Not needed when the labels come from daily stats; checked below otherwise.
            metadata={"allow_missing": True},
        )
    },
    check_specs=[
        dg.AssetCheckSpec("label_ranges", asset="video_labels_7d", blocking=True),
        dg.AssetCheckSpec("window_complete", asset="video_labels_7d", blocking=True),
        dg.AssetCheckSpec(
            "no_plays_quarantined",
            asset="video_labels_7d",
            blocking=True,
            description="Fails when daily-stats rows of the window that belong to the day's "
            "videos were quarantined: their labels would silently lose those plays.",
        ),
    ],
)
def video_labels_7d(
    context: dg.AssetExecutionContext,
    config: LabelsConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_watch_daily: PartitionFiles,
):
    """The 7-day labels (DESIGN §4) of the videos created on D, once D+7 is over: exact, from
    the partials of event days D..D+7; or, where the lake has `video_daily_stats` for D..D+6
    instead (or has no watch events at all), the sums of those 7 calendar days."""
    day, lk = context.partition_key, lake.get_lake()
    source = choose_label_source(lk, day, config.prefer_daily_stats)
    with duckdb.connect() as con:
        raw_videos.register(con, "videos", VIDEOS_SCHEMA)
        result = labels_for_day(con, lk, day, source, video_watch_daily)
        bad = core.label_range_violations(con, "labels", result.labels)
    labels, read, lost = result.labels, result.days_read, result.quarantined
    ranges_ok, window_ok = not bad, read == list(source.days)
    kept_ok = not lost.loses_plays
    lost_reasons = dg.MetadataValue.json(lost.reasons_of_day_videos)
    yield dg.Output(
        labels,
        metadata={
            PUBLISH: ranges_ok and window_ok and kept_ok,
            "label_source": source.description,
            "source_rows_read": result.rows_read,
            "source_rows_valid": result.rows_valid,
            "source_rows_quarantined": lost.rows,
            "source_plays_quarantined": lost.plays,
            "source_duplicates_dropped": result.duplicates_dropped,
            "quarantined_rows_of_these_videos": lost.rows_of_day_videos,
            "quarantined_plays_of_these_videos": lost.plays_of_day_videos,
            "quarantine_reasons_of_these_videos": lost_reasons,
            "videos": labels.num_rows,
            "videos_without_plays": int((labels["plays"].to_numpy() == 0).sum()),
            "plays": int(labels["plays"].to_numpy().sum()),
            # Labels the source does not keep are null, never 0 (DESIGN §4).
            "null_labels": dg.MetadataValue.json(
                {c: labels[c].null_count for c in core.LABEL_COLUMNS if labels[c].null_count}
            ),
            "events_before_created_at": int(labels["early_events"].to_numpy().sum()),
            "days_read": dg.MetadataValue.json(read),
        },
    )
    yield dg.AssetCheckResult(
        check_name="label_ranges",
        passed=ranges_ok,
        metadata={"violations": dg.MetadataValue.json(bad)},
        description="skips, full_watches, day0_plays <= plays; 0 <= skip_rate <= 1; counts >= 0; "
        "ratios only with plays and their counters; virality >= 0, only with followers > 0",
    )
    yield dg.AssetCheckResult(
        check_name="window_complete",
        passed=window_ok,
        metadata={"expected": list(source.days), "read": read},
    )
    yield dg.AssetCheckResult(
        check_name="no_plays_quarantined",
        passed=kept_ok,
        metadata={
            "label_source": source.kind,
            "rows_of_these_videos": lost.rows_of_day_videos,
            "plays_of_these_videos": lost.plays_of_day_videos,
            "reasons": lost_reasons,
            "window_rows_quarantined": lost.rows,
            "window_rows_without_video_id": lost.unattributed_rows,
        },
    )


@dg.asset(
    op_tags=K8S_CREATOR_FEATURES_TAGS,
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="labels",
    kinds={"duckdb", "parquet"},
    ins={
        "raw_videos": dg.AssetIn(partition_mapping=HISTORY_VIDEOS),
        "video_labels_7d": dg.AssetIn(partition_mapping=CLOSED_LABEL_DAYS),
    },
    check_specs=[dg.AssetCheckSpec("point_in_time", asset="creator_features", blocking=True)],
)
def creator_features(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    raw_videos: PartitionFiles,
    video_labels_7d: PartitionFiles,
):
    """Point-in-time creator history for every video created on D: only labels whose window
    closed before D began, only videos created before each video's own created_at."""
    day = context.partition_key
    today = PartitionFiles(raw_videos.lake, "raw_videos", (day,), raw_videos.files[-1:])
    with duckdb.connect() as con:
        today.register(con, "videos", VIDEOS_SCHEMA)
        raw_videos.register(con, "history_videos", VIDEOS_SCHEMA)
        video_labels_7d.register(con, "history_labels", LABELS_SCHEMA)
        features = core.creator_features(con, day)
        leaks = core.point_in_time_violations(con, "features", features, day)
    yield dg.Output(
        features,
        metadata={
            PUBLISH: leaks == 0,
            "videos": features.num_rows,
            "videos_with_labelled_history": int((features["prior_labeled"].to_numpy() > 0).sum()),
            "label_days_read": len(video_labels_7d.days),
            "latest_label_day": video_labels_7d.days[-1] if video_labels_7d.days else "none",
        },
    )
    yield dg.AssetCheckResult(
        check_name="point_in_time",
        passed=leaks == 0,
        metadata={"rows_seeing_open_windows": leaks},
        description="No feature reads a label whose 7-day window was still open when D began.",
    )


defs = dg.Definitions(assets=[video_watch_daily, video_labels_7d, creator_features])
