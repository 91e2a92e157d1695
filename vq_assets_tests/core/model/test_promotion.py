"""The promotion gate and the model lookup that scoring relies on."""

import math

import pytest

from vq_assets.core.lake.store import Lake
from vq_assets.core.model import registry
from vq_assets.core.model.promotion import gate, moves_alias
from vq_assets.core.model.registry import ModelRecord


@pytest.mark.parametrize(
    ("new", "current", "promoted", "reason"),
    [
        (0.40, None, True, "no production model yet"),
        (math.nan, None, False, "nan: not promoted"),
        (math.nan, 0.40, False, "nan: not promoted"),
        (0.40, math.nan, True, "production's mean test Spearman on these days is nan"),
        (0.395, 0.40, True, "delta -0.0050 >= -0.01): promoted"),
        (0.41, 0.40, True, "delta +0.0100 >= -0.01): promoted"),
        (0.38, 0.40, False, "trails production 0.4000 by 0.0200 > tolerance 0.01: not promoted"),
    ],
)
def test_gate(new: float, current: float | None, promoted: bool, reason: str) -> None:
    ok, why = gate(new, current, tolerance=0.01)
    assert ok is promoted
    assert reason in why


def test_alias_follows_only_the_newest_week() -> None:
    assert moves_alias("2026-02-08", ["2026-01-25", "2026-02-01"])
    assert moves_alias("2026-02-08", [])
    assert not moves_alias("2026-01-25", ["2026-02-01", "2026-02-08"])  # a backfill


def _record(week: str, version: int, promoted: bool) -> ModelRecord:
    return ModelRecord(
        week=week,
        model_version=version,
        run_id=f"run{version}",
        promoted=promoted,
        test_mean_spearman=0.5 if promoted else 0.1,
        production_before=None,
        production_before_test_mean_spearman=None,
        gate_reason="test",
        best_epoch=3,
        model_path=f"/lake/models/quality/v{version}",
    )


def test_lookup_skips_a_rejected_week_and_never_looks_ahead(tmp_path) -> None:
    lake = Lake.local(tmp_path)
    for record in (
        _record("2026-01-18", 1, True),
        _record("2026-01-25", 2, False),  # failed the gate: never scores
        _record("2026-02-01", 3, True),
    ):
        lake.write_table(lake.asset_dir("quality_model", record.week), record.to_table())
    assert registry.read_record(lake, "2026-01-25") == _record("2026-01-25", 2, False)
    assert [r.model_version for r in registry.promoted_records(lake)] == [1, 3]
    assert registry.production_as_of(lake, "2026-01-18") is None  # only weeks before the day
    assert registry.production_as_of(lake, "2026-01-19").model_version == 1
    assert registry.production_as_of(lake, "2026-01-31").model_version == 1  # week 2 rejected
    assert registry.production_as_of(lake, "2026-02-02").model_version == 3
