"""A killed GPU step must not hold the `gpu` pool slot for ever (issue 15 point 4).

A run is started in a real process on an instance configured like the repository's
`dagster.yaml` (one `gpu` slot, run monitoring on), holds the slot in a `pool="gpu"` step and is
killed with SIGKILL. The dead run stays STARTED and keeps the slot: nothing in this Dagster can
see that an in-process run's worker died (the default run launcher offers no health check; a
run launched from the UI is marked failed by the code server that started it). Once the run is
marked finished (the UI's Terminate, here `report_run_failed`), the monitoring daemon's
concurrency sweep frees the slot, and the next GPU run gets it. `dagster run delete` frees it at
once.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

REPO = Path(__file__).resolve().parents[2]

# A run of one pool="gpu" step on the instance in $DAGSTER_HOME; the step sleeps `argv[1]` s.
RUN = textwrap.dedent(
    """
    import sys, time
    import dagster as dg

    @dg.asset(pool="gpu")
    def gpu_step() -> None:
        time.sleep(float(sys.argv[1]))

    with dg.DagsterInstance.get() as instance:
        ok = dg.materialize([gpu_step], instance=instance, raise_on_error=False).success
    sys.exit(0 if ok else 1)
    """
)


@pytest.fixture
def home(tmp_path) -> Path:
    """A DAGSTER_HOME with the repository's concurrency and run monitoring settings."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    config["local_artifact_storage"]["config"]["base_dir"] = str(tmp_path)
    config["compute_logs"]["config"]["base_dir"] = str(tmp_path / "compute_logs")
    # The sweep waits this long after a run ended; the repository's value, shortened for the test.
    config["run_monitoring"]["free_slots_after_run_end_seconds"] = 1
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _start_run(home: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, str(seconds)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        start_new_session=True,
    )


def _holder(instance: dg.DagsterInstance) -> str | None:
    """The run holding the gpu slot, if any."""
    claimed = instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
    return claimed[0].run_id if claimed else None


def _killed_gpu_run(instance: dg.DagsterInstance, home: Path) -> str:
    proc = _start_run(home, 600)
    try:
        deadline = time.monotonic() + 90
        while _holder(instance) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the run never got the slot"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # our own child, by its PID
        proc.wait()
    run_id = _holder(instance)
    assert run_id is not None
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # the dead run
    return run_id


class _Workspace:
    """What the concurrency sweep reads from the daemon's workspace: the instance."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance


def test_killed_gpu_run_releases_the_pool_once_marked_finished(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.event_log_storage.get_concurrency_info("gpu").limit == 1
        run_id = _killed_gpu_run(instance, home)
        sweep = _Workspace(instance)
        list(execute_concurrency_slots_iteration(sweep, dg.get_dagster_logger()))
        assert _holder(instance) == run_id  # a STARTED run's slots are never taken from it

        instance.report_run_failed(instance.get_run_by_id(run_id), "run worker killed")
        time.sleep(1.5)  # past free_slots_after_run_end_seconds
        list(execute_concurrency_slots_iteration(sweep, dg.get_dagster_logger()))
        assert _holder(instance) is None
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE

        assert _start_run(home, 0).wait(timeout=120) == 0  # the next GPU run gets the slot


def test_dagster_run_delete_frees_the_slot_at_once(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = _killed_gpu_run(instance, home)
        subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "run", "delete", "-f", run_id],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            check=True,
            timeout=120,
        )
        assert _holder(instance) is None


def test_the_replay_reclaims_its_own_killed_run(home):
    """`vq run` executes in process: before replaying it marks its dead runs failed and frees
    their slots, so a replay killed with -9 never blocks the next one."""
    from vq_assets.replay import reclaim_dead_runs

    script = RUN.replace("raise_on_error=False", 'raise_on_error=False, tags={"vq/replay": "true"}')
    with dg.DagsterInstance.from_config(str(home)) as instance:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, "600"],
            env={**os.environ, "DAGSTER_HOME": str(home)},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 90
            while _holder(instance) is None:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            live = _holder(instance)
            assert reclaim_dead_runs(instance) == []  # alive: left alone
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert reclaim_dead_runs(instance) == [live]
        assert instance.get_run_by_id(live).status == dg.DagsterRunStatus.FAILURE
        assert _holder(instance) is None
        assert _start_run(home, 0).wait(timeout=120) == 0
