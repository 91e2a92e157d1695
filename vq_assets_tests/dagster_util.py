"""Materialising assets against a lake in a temporary folder."""

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource

from vq_assets.definitions import build_definitions
from vq_assets.resources import LakeIOManager, LakeResource, resources_for_deployment


def resources(lake_root: str | Path, s3: S3Resource | None = None) -> dict[str, object]:
    """The local deployment's resources (VQ_HOME is a temp dir under tests) on `lake_root`."""
    lake = LakeResource(root=str(lake_root), s3=s3 or S3Resource())
    return {
        **resources_for_deployment("local"),
        "lake": lake,
        "lake_io": LakeIOManager(lake=lake),
    }


def materialize_days(
    names: list[str],
    days: list[str],
    lake_root: str | Path,
    instance: dg.DagsterInstance,
    s3: S3Resource | None = None,
    raise_on_error: bool = True,
) -> list[dg.ExecuteInProcessResult]:
    """Materialise each asset for each day, asset by asset (the order a backfill follows)."""
    out = []
    for name in names:
        for day in days:
            out.append(
                dg.materialize(
                    list(build_definitions().assets),
                    selection=[name],
                    partition_key=day,
                    resources=resources(lake_root, s3),
                    instance=instance,
                    raise_on_error=raise_on_error,
                )
            )
    return out
