"""`vq run`'s replay: a quiet console with the full log in a file, and a clear start date."""

import datetime as dt

import dagster as dg
import pytest

from vq_assets.cli import main
from vq_assets.core.lake.store import Lake
from vq_assets.core.sources.simulator import simulate_local
from vq_assets.definitions import build_definitions
from vq_assets.partitions import START_DATE
from vq_assets.replay import Replay, ReplayError, check_start


def _world(root, first: str, days: int) -> Lake:
    simulate_local(root, dt.date.fromisoformat(first), days, 12, seed=1, media=False)
    return Lake.local(root)


def test_a_start_date_before_the_first_landing_is_refused_with_what_to_set(tmp_path, capsys):
    lake = _world(tmp_path / "lake", "2026-01-03", 1)
    with pytest.raises(ReplayError, match="Set VQ_START_DATE=2026-01-03"):
        check_start(lake, START_DATE)
    assert (
        main(
            [
                "run",
                "--lake",
                str(tmp_path / "lake"),
                "--start",
                "2026-01-03",
                "--end",
                "2026-01-03",
            ]
        )
        == 1
    )
    assert "VQ_START_DATE is 2026-01-01, but the first landed day" in capsys.readouterr().err
    with pytest.raises(ReplayError, match="nothing has landed"):
        check_start(Lake.local(tmp_path / "empty"), START_DATE)


def test_console_shows_one_line_per_day_and_the_file_has_every_event(tmp_path, capfd, monkeypatch):
    lake = _world(tmp_path / "lake", START_DATE, 2)
    monkeypatch.setenv("VQ_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("VQ_IMAGE_ENCODER", "blip")  # its placeholder warns on every day
    monkeypatch.delenv("VQ_IMAGE_SIZE")  # an EfficientNet setting BLIP refuses
    lines: list[str] = []
    log_file = tmp_path / "logs" / "replay.log"
    replay = Replay(
        build_definitions(),
        dg.DagsterInstance.ephemeral(),
        lake,
        train_days=28,
        log=lines.append,
        log_file=log_file,
    )
    replay.run(START_DATE, "2026-01-02")
    out = capfd.readouterr()
    days = [line for line in lines if line.startswith("day ")]
    warnings = [line for line in lines if line.startswith("  warning")]
    # The placeholder encoder warns on every day's embeddings; the console says it once.
    assert len(warnings) == 1 and "PLACEHOLDER" in warnings[0], lines
    assert len(lines) == len(days) + len(warnings)
    assert [line.split()[:3] for line in days] == [
        ["day", "2026-01-01", "[1/2]"],
        ["day", "2026-01-02", "[2/2]"],
    ]
    assert "daily_chain[2026-01-01]" in days[0] and "ETA" in days[0]
    assert " - DEBUG - " not in out.out + out.err  # Dagster's step events stay off the console
    logged = log_file.read_text()
    assert "STEP_START" in logged and "video_embeddings" in logged and "PIPELINE_SUCCESS" in logged
