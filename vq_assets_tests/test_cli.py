"""The `vq` command's argument wiring: `demo` reuses `simulate`, so it must carry every option
`cmd_simulate` reads (a missing one fails only at run time, minutes into `make demo`)."""

import argparse
import inspect
import json
import re

import pytest

from vq_assets import cli


def test_demo_carries_every_option_simulate_reads() -> None:
    demo = cli.build_parser().parse_args(["demo"])
    read = set(re.findall(r"\bargs\.(\w+)", inspect.getsource(cli.cmd_simulate)))
    assert {"lake", "days", "counters"} <= read
    missing = sorted(name for name in read if not hasattr(demo, name))
    assert not missing, f"vq demo lacks {missing}"
    assert demo.counters is None  # the demo lands watch events, not rollups


def test_simulate_counters_flag() -> None:
    args = cli.build_parser().parse_args(["simulate", "--counters", "plays,likes"])
    assert isinstance(args, argparse.Namespace) and args.counters == "plays,likes"


@pytest.mark.usefixtures("one_torch_thread")
def test_sweep_reports_the_best_child_and_only_apply_writes_settings(
    tmp_path, monkeypatch, capsys
) -> None:
    from mlflow.tracking import MlflowClient

    from vq_assets.core.lake.store import Lake
    from vq_assets.core.model.settings import read_applied
    from vq_assets_tests.core.model.test_sweep import _table

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    lake = Lake.local(tmp_path / "lake")
    for week in ("2026-01-25", "2026-02-01"):
        lake.write_table(lake.asset_dir("training_set", week), _table())
    tiny = "--width 8 --cross-rank 4 --mlp 16 --members 1 --max-epochs 2 --patience 2"
    argv = ["sweep", "--space", '{"lr": [0.001, 0.01]}', "--lake", str(tmp_path / "lake")]
    assert cli.main(argv + tiny.split()) == 0
    out = capsys.readouterr().out
    assert "nothing applied" in out
    parent = re.search(r"MLflow parent run (\w+)", out).group(1)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(parent).info.run_name == "sweep-2026-02-01"  # the latest week
    best = re.search(r"vq sweep --apply (\w+)", out).group(1)
    applied = tmp_path / "applied.json"
    assert not applied.exists()
    assert cli.main(["sweep", "--apply", best, "--applied-file", str(applied)]) == 0
    assert set(read_applied(applied)["settings"]) == {"lr"}
    assert json.loads(applied.read_text())["sources"] == {"lr": best}
