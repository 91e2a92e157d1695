"""The quality_sweep asset: a week's sweep through Dagster, its table in the lake and in the
materialisation's metadata."""

import dagster as dg
import pytest

from vq_assets.core.lake.store import Lake
from vq_assets.core.model.sweep import SCORE
from vq_assets.definitions import build_definitions
from vq_assets_tests.core.model.test_sweep import _table
from vq_assets_tests.dagster_util import resources

WEEK = "2026-02-01"
TINY = {
    "width": 8,
    "cross_rank": 4,
    "mlp": [16],
    "members": 1,
    "group_dropout": 0.0,
    "max_epochs": 2,
    "patience": 2,
    "batch_size": 64,
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_sweep_asset_writes_one_row_per_child_and_reports_the_best(tmp_path) -> None:
    lake = Lake.local(tmp_path)
    lake.write_table(lake.asset_dir("training_set", WEEK), _table())
    space = '{"width": [8, 16]}'
    result = dg.materialize(
        list(build_definitions().assets),
        selection=["quality_sweep"],
        partition_key=WEEK,
        resources=resources(tmp_path),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"quality_sweep": {"config": {**TINY, "space": space}}}},
    )
    assert result.success
    written = lake.read_table(lake.asset_file("quality_sweep", WEEK))
    assert sorted(written.column("width").to_pylist()) == [8, 16]
    (materialization,) = result.asset_materializations_for_node("quality_sweep")
    meta = materialization.metadata
    records = meta["summary"].value.records
    assert len(records) == 2
    best = max(records, key=lambda r: r.data[SCORE])
    assert meta["best_child_run_id"].value == best.data["child_run_id"]
    assert best.data["child_run_id"] in meta["apply_with"].value
    assert meta["plot.score_by_setting"].value.startswith("![score_by_setting](data:image/png")
