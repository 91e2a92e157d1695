"""Ingest: landing days validated against the contract; rejects quarantined and counted."""

import dagster as dg

from vq_assets.core.labels.source import events_landed
from vq_assets.core.lake.contract import (
    VIDEOS,
    WATCH_EVENTS,
    ValidatedDay,
    register_ingested_ids,
    validate_day,
)
from vq_assets.defs.k8s import K8S_RAW_VIDEOS_TAGS, K8S_WATCH_EVENTS_TAGS
from vq_assets.partitions import daily
from vq_assets.resources import PUBLISH, DuckDBResource, LakeResource


class IngestConfig(dg.Config):
    max_quarantine_share: float = 0.05
    # IANA zone (e.g. "Europe/Berlin") of landing timestamps written without a time zone; they
    # are converted to UTC. None: such a file fails the day, since its instants are unknown.
    naive_timestamps_zone: str | None = None


def _quarantine_check(name: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "quarantine_share",
        asset=name,
        blocking=True,
        description="Fails when the share of quarantined rows passes max_quarantine_share.",
    )


def _publish(lake: LakeResource, table: str, day: str, result: ValidatedDay, config: IngestConfig):
    """Write the quarantine partition (replaced even when empty) and yield output + check."""
    lk = lake.get_lake()
    share = result.quarantine_share
    # A day that fails the blocking check leaves the previous partition (and its quarantine) in
    # place; the new version goes to .rejected/ for inspection.
    passed = share <= config.max_quarantine_share
    quarantine_uri = lk.write_table(lk.quarantine_dir(table, day), result.rejects, publish=passed)
    reasons = (
        result.rejects.group_by("reason").aggregate([("reason", "count")]).to_pylist()
        if result.rejects.num_rows
        else []
    )
    yield dg.Output(
        result.valid,
        metadata={
            PUBLISH: passed,
            "rows_read": result.rows_read,
            "rows_valid": result.rows_valid,
            "rows_quarantined": result.rejects.num_rows,
            "quarantine_share": share,
            "duplicates_dropped": result.duplicates_dropped,
            "source_files": dg.MetadataValue.json(result.files),
            "ignored_files": dg.MetadataValue.json(result.ignored),
            "quarantine_path": dg.MetadataValue.path(quarantine_uri),
            "quarantine_reasons": dg.MetadataValue.md(
                "\n".join(f"- {r['reason']}: {r['reason_count']}" for r in reasons) or "none"
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="quarantine_share",
        passed=passed,
        metadata={"share": share, "threshold": config.max_quarantine_share},
    )


@dg.asset(
    op_tags=K8S_RAW_VIDEOS_TAGS,
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="ingest",
    kinds={"duckdb", "parquet"},
    check_specs=[_quarantine_check("raw_videos")],
)
def raw_videos(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
):
    """Videos created on the day, validated against the contract (DESIGN §3)."""
    lk, day = lake.get_lake(), context.partition_key
    with duckdb.connect() as con:
        # Every other ingested day, later ones included: a day may land late.
        register_ingested_ids(con, lk, "seen_videos", "raw_videos", except_day=day)
        result = validate_day(
            con,
            lk,
            VIDEOS,
            day,
            seen_video_ids="seen_videos",
            naive_timestamps_zone=config.naive_timestamps_zone,
        )
    yield from _publish(lake, "videos", day, result, config)


@dg.asset(
    op_tags=K8S_WATCH_EVENTS_TAGS,
    partitions_def=daily,
    io_manager_key="lake_io",
    group_name="ingest",
    kinds={"duckdb", "parquet"},
    check_specs=[_quarantine_check("watch_events")],
    # Not materialized on a lake that keeps no watch events (only daily rollups).
    output_required=False,
)
def watch_events(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    lake: LakeResource,
    duckdb: DuckDBResource,
):
    """View events of the day, validated; exact duplicates dropped, keeping one copy. On a lake
    with no watch_events landing at all (a platform that keeps only video_daily_stats) the
    step is skipped, said in its log and check, and nothing downstream of it runs."""
    lk, day = lake.get_lake(), context.partition_key
    if not events_landed(lk):
        reason = (
            f"the lake has no watch_events landing ({lk.uri(lk.path('landing', 'watch_events'))}"
            f" does not exist): nothing to ingest for {day}; labels come from video_daily_stats"
        )
        context.log.warning(f"skipped: {reason}")
        # A blocking check must answer even when its asset is not materialized.
        yield dg.AssetCheckResult(
            check_name="quarantine_share", passed=True, metadata={"skipped": reason}
        )
        return
    # The valid rows stream from DuckDB into a staged parquet file that the IO manager
    # publishes: a day of events is never whole in Python (DESIGN §8, bounded memory).
    stage = lk.staging_path("watch_events", day)
    try:
        with duckdb.connect() as con:
            result = validate_day(
                con,
                lk,
                WATCH_EVENTS,
                day,
                naive_timestamps_zone=config.naive_timestamps_zone,
                stage=stage,
            )
        yield from _publish(lake, "watch_events", day, result, config)
    finally:
        lk.discard_staged(stage)  # published by then, or failed: nothing to keep


defs = dg.Definitions(assets=[raw_videos, watch_events])
