"""The code location as Dagster loads it, and a snapshot of its graph.

Any change to an asset's partitions, group, checks or kinds, to a job's selection, a schedule's
cron or the set of sensors fails `test_graph_matches_the_reviewed_snapshot` until the snapshot is
regenerated (`VQ_UPDATE_SNAPSHOT=1 pytest vq_assets_tests/defs/test_definitions.py`) and the diff
reviewed with the change.
"""

import json
import os
from pathlib import Path

import dagster as dg
from dagster._core.code_pointer import CodePointer
from dagster._core.definitions.reconstruct import def_from_pointer, repository_def_from_target_def

from vq_assets.definitions import build_definitions

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _partitions(pd: dg.PartitionsDefinition | None) -> str | None:
    if pd is None:
        return None
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):
        return f"{pd.cron_schedule} from {pd.start.date()} end_offset={pd.end_offset}"
    return type(pd).__name__


def snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        checks = defs.resolve_assets_def(key).check_specs
        assets[key.to_user_string()] = {
            "partitions": _partitions(node.partitions_def),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": {c.name: {"blocking": c.blocking} for c in sorted(checks, key=str)},
        }
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith("__")
    }
    return {
        "assets": assets,
        "jobs": jobs,
        "schedules": {
            s.name: defs.resolve_schedule_def(s.name).cron_schedule for s in defs.schedules
        },
        "sensors": sorted(s.name for s in defs.sensors),
    }


def test_dagster_loads_the_code_location_through_its_definitions_entry_point():
    # The way `dagster dev` and the code server load it (pyproject's [tool.dagster]).
    target = def_from_pointer(
        CodePointer.from_module("vq_assets.definitions", "defs", working_directory=".")
    )
    repo = repository_def_from_target_def(target)
    names = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert names == set(snapshot(build_definitions())["assets"])
    assert {"lake", "lake_io", "duckdb", "device", "encoder", "mlflow_tracking"} <= set(
        repo.get_top_level_resources()
    )


def test_graph_matches_the_reviewed_snapshot():
    current = snapshot(build_definitions())
    if os.environ.get("VQ_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    reviewed = json.loads(SNAPSHOT.read_text())
    for section in ("assets", "jobs", "schedules", "sensors"):
        assert current[section] == reviewed[section], (
            f"the {section} of the code location changed; review the change, then regenerate "
            "with VQ_UPDATE_SNAPSHOT=1"
        )
