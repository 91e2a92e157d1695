"""`vq experiment`'s loop: a simulated world with vq's own flywheel weights placing the
treatment's cold starts, through the Dagster jobs, to the pooled report."""

import datetime as dt

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import spearmanr

from vq_assets.cli import main
from vq_assets.closed_loop import ExperimentReplay, Plan, policy_named, report
from vq_assets.core.lake.store import Lake
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.core.sources.simulator.closed_loop import ClosedLoop
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE


def _read(lake: Lake, *parts: str) -> pa.Table:
    return pa.concat_tables(lake.read_table(f) for f in lake.list_files(lake.path(*parts)))


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop") / "lake"
    lake = Lake.local(root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VQ_LAKE", str(root))
        world = ClosedLoop(lake, dt.date.fromisoformat(START_DATE), 40, seed=5, media=False)
        lines: list[str] = []
        replay = ExperimentReplay(
            build_definitions(),
            dg.DagsterInstance.ephemeral(),
            lake,
            train_days=28,
            min_train_days=5,
            log=lines.append,
            asset_config={
                "flywheel_sampling_weights": {"policy": "thompson", "epsilon": 0.2},
                "flywheel_experiment": {"resamples": 50},
            },
            world=world,
            plan=Plan(ab_days=2),
        )
        ab_days = replay.run_loop(START_DATE)
        yield lake, ab_days, lines


def test_the_ab_starts_with_the_first_model_and_runs_its_days_to_their_labels(looped):
    lake, ab_days, lines = looped
    # the first Sunday with 5 closed label days trains the first model: 2026-01-18
    assert ab_days == ["2026-01-18", "2026-01-19"]
    assert lake.list_days(lake.path("landing", "experiment_arms")) == ab_days
    assert lake.list_days(lake.asset_dir("flywheel_experiment")) == ab_days
    assert lines[-1].startswith("day 2026-01-26 (closing windows)")  # 2026-01-19 + 7 days
    table = _read(lake, "assets", "flywheel_experiment", "dt=2026-01-18")
    assert set(table["scope"].to_pylist()) == {"cold_start", "window"}


def test_the_treatments_cold_starts_follow_the_lakes_weights_and_the_controls_do_not(looped):
    lake, ab_days, _ = looped
    day = ab_days[0]
    weights = _read(lake, "assets", "flywheel_sampling_weights", f"dt={day}")
    arms = _read(lake, "landing", "experiment_arms", f"dt={day}")
    events = _read(lake, "landing", "watch_events", f"dt={day}")
    events = events.filter(pc.is_in(events["video_id"], value_set=weights["video_id"]))
    arm_of = dict(zip(arms["user_id"].to_pylist(), arms["arm"].to_pylist(), strict=True))
    ids = weights["video_id"].to_pylist()
    plays = {a: dict.fromkeys(ids, 0) for a in ("control", "treatment")}
    for v, u in zip(events["video_id"].to_pylist(), events["user_id"].to_pylist(), strict=True):
        plays[arm_of[u]][v] += 1
    w = weights["sampling_weight"].to_numpy()
    treated = np.array([plays["treatment"][v] for v in ids])
    control = np.array([plays["control"][v] for v in ids])
    assert spearmanr(w, treated)[0] > 0.5
    assert abs(spearmanr(w, control)[0]) < 0.4


def test_the_pooled_report_has_both_scopes_and_every_guardrail(looped):
    lake, ab_days, _ = looped
    text, passed = report(lake, ab_days, resamples=50)
    assert "flywheel A/B over 2 creation days 2026-01-18..2026-01-19" in text
    for scope, metric in [("cold_start", "skip_rate"), ("window", "discoverable_corpus")]:
        assert f"| {scope} | {metric} |" in text
    guardrails = [line for line in text.splitlines() if line.startswith("  [")]
    assert len(guardrails) == 7
    assert passed == all(line.startswith("  [pass]") for line in guardrails)


def test_a_policy_folder_must_stay_inside_the_lake(tmp_path):
    lake = Lake.local(tmp_path)
    with pytest.raises(ValueError, match="a folder inside the lake"):
        policy_named("../elsewhere", lake)


def test_vq_experiment_refuses_an_open_loop_lake(tmp_path, capsys):
    simulate_local(tmp_path / "lake", dt.date.fromisoformat(START_DATE), 1, 5, media=False)
    assert main(["experiment", "--lake", str(tmp_path / "lake")]) == 2
    assert "holds an open-loop world; use a new lake" in capsys.readouterr().err


def test_each_experiment_lake_has_its_own_dagster_instance(tmp_path):
    from vq_assets.cli import _experiment_instance

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    first = _experiment_instance(a)
    # the demo's instance has every day of its own lake materialized: sharing it would make
    # the experiment skip its days
    assert first.root_directory != _experiment_instance(b).root_directory
    assert first.root_directory == _experiment_instance(a).root_directory  # resumable
    assert not first.is_ephemeral
