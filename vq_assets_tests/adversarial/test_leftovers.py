"""Leftovers of killed writes are swept, and labels are bit-identical between runs (issue 15
point 13).

A write killed mid-way left `.part-0.parquet.<id>.tmp` in partition and quarantine folders for
good; the next write of the same target now removes those of dead writers (older than
`STALE_TMP_SECONDS`) and leaves a live writer's alone. `avg_watch_time_s` differed in the last
digit between identical runs, because DuckDB's threads added the float watch times in a
different order each time; it is now an integer sum.
"""

import datetime as dt
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.labels import windows
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import STALE_TMP_SECONDS, Lake

DAY = "2026-01-01"


def _leftover(path: Path, age_s: float) -> Path:
    path.write_bytes(b"half a parquet file")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_next_write_sweeps_stale_tmp_files_and_keeps_live_ones(tmp_path):
    lake = Lake.local(tmp_path)
    for directory in (
        lake.asset_dir("watch_events", DAY),
        lake.quarantine_dir("watch_events", DAY),
    ):
        folder = Path(directory)
        folder.mkdir(parents=True)
        dead = _leftover(folder / f".part-0.parquet.{'a' * 32}.tmp", STALE_TMP_SECONDS + 60)
        live = _leftover(folder / f".part-0.parquet.{'b' * 32}.tmp", 5)  # a concurrent writer's
        other = _leftover(folder / "notes.tmp", STALE_TMP_SECONDS + 60)  # not ours: kept
        lake.write_table(directory, pa.table({"x": [1, 2]}))
        assert not dead.exists() and live.exists() and other.exists()
        assert lake.read_table(f"{directory}/part-0.parquet").num_rows == 2

    model = tmp_path / "models" / "v1"
    model.mkdir(parents=True)
    dead = _leftover(model / f".weights.pt.{'c' * 32}.tmp", STALE_TMP_SECONDS + 60)
    old_style = _leftover(model / f"weights.pt.{'d' * 32}.tmp", STALE_TMP_SECONDS + 60)
    lake.write_bytes(str(model / "weights.pt"), b"weights")
    assert not dead.exists() and not old_style.exists()
    assert sorted(p.name for p in model.iterdir()) == ["weights.pt"]


def _day_with_many_events(folder: Path) -> None:
    """Three videos with 600,000 events in small row groups: enough for DuckDB to split one
    video's sum between threads."""
    rng = np.random.default_rng(0)
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    n, ids = 600_000, np.array(["v0", "v1", "v2"])
    videos = pa.table(
        {
            "video_id": ids,
            "creator_id": ["c"] * len(ids),
            "created_at": pa.array([created] * len(ids), pa.timestamp("us", "UTC")),
            "duration_s": [10.0] * len(ids),
            "creator_followers": [100] * len(ids),
        }
    )
    events = pa.table(
        {
            "video_id": ids[rng.integers(0, len(ids), n)],
            "event_ts": pa.array([created + dt.timedelta(hours=1)] * n, pa.timestamp("us", "UTC")),
            "watch_time_s": rng.uniform(0, 40, n),
            "liked": pa.nulls(n, pa.bool_()),
            "commented": pa.nulls(n, pa.bool_()),
            "shared": pa.nulls(n, pa.bool_()),
        }
    )
    pq.write_table(videos, folder / "videos.parquet")
    pq.write_table(events, folder / "events.parquet", row_group_size=20_000)


def _labels(folder: Path, threads: int) -> tuple[list[float], list[float]]:
    with connect(threads=threads) as con:
        con.execute(f"CREATE VIEW videos AS SELECT * FROM read_parquet('{folder}/videos.parquet')")
        con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{folder}/events.parquet')")
        partials = windows.watch_daily_partials(con, DAY)
        con.register("partials", partials)
        labels = windows.labels_from_partials(con, DAY)
    return (
        partials.column("watch_time_sum").to_pylist(),
        labels.column("avg_watch_time_s").to_pylist(),
    )


def test_labels_are_bit_identical_whatever_the_thread_count(tmp_path):
    _day_with_many_events(tmp_path)
    runs = [_labels(tmp_path, threads) for threads in (1, 4, 4, 1, 4)]
    assert all(run == runs[0] for run in runs)  # float ==: every bit
    # And still the mean of the events (a float sum's own error is far larger than 1e-12).
    events = pq.read_table(tmp_path / "events.parquet").to_pandas()
    want = events.groupby("video_id")["watch_time_s"].mean().sort_index().tolist()
    assert np.allclose(runs[0][1], want, rtol=1e-12, atol=0)
