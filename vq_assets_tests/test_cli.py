"""The `vq` command's argument wiring: `demo` reuses `simulate`, so it must carry every option
`cmd_simulate` reads (a missing one fails only at run time, minutes into `make demo`)."""

import argparse
import inspect
import re

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
