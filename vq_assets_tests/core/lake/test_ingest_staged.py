"""The events day written by DuckDB to a staged file (what `watch_events` publishes) holds exactly
the rows, in the order, of a plain-Python reference of the contract: several files, exact
duplicates within and across files (NULL, NaN and -0.0 values included), bad rows."""

import datetime as dt
import math
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq

from vq_assets.core.lake.contract import WATCH_EVENTS, WATCH_EVENTS_SCHEMA, validate_day
from vq_assets.core.lake.sql import connect
from vq_assets.core.lake.store import PART_FILE, Lake, StagedFile
from vq_assets_tests.landing import ts

DAY = "2026-01-05"
COLS = WATCH_EVENTS_SCHEMA.names


def _norm(value: object) -> object:
    """NaN equal to NaN, as DuckDB compares it (None, -0.0 == 0.0 already are in Python)."""
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def _reasons(row: dict) -> str:
    """EVENT_RULES in plain Python, in their order."""
    start, end = ts(DAY), ts(DAY, 24)
    w, at = row["watch_time_s"], row["event_ts"]
    broken = [
        ("video_id is missing", row["video_id"] is None or row["video_id"].strip(" ") == ""),
        ("user_id is missing", row["user_id"] is None or row["user_id"].strip(" ") == ""),
        ("event_ts is missing", at is None),
        ("event_ts outside the partition's day", at is not None and not start <= at < end),
        ("watch_time_s is not >= 0", w is None or math.isnan(w) or w < 0),
        ("watch_time_s is not finite", w is not None and math.isinf(w)),
    ]
    return "; ".join(r for r, bad in broken if bad)


def _reference(files: list[tuple[str, list[dict]]]) -> tuple[list[dict], list[dict], int]:
    """(valid rows, rejects with reason/source_file/source_row, duplicates) in (file, row) order."""
    seen: set[tuple] = set()
    valid, rejects, dups = [], [], 0
    for uri, rows in files:
        for i, row in enumerate(rows):
            key = tuple(_norm(row[c]) for c in COLS)
            if key in seen:
                dups += 1
                continue
            seen.add(key)
            reason = _reasons(row)
            if reason:
                rejects.append(row | {"reason": reason, "source_file": uri, "source_row": i})
            else:
                valid.append(row)
    return valid, rejects, dups


def _rows(rng: random.Random, n: int) -> list[dict]:
    base = ts(DAY)
    rows = []
    for _ in range(n):
        row = {
            "video_id": f"v{rng.randrange(50)}",
            "user_id": f"u{rng.randrange(20)}",
            "event_ts": base + dt.timedelta(seconds=rng.randrange(3) * 3600),
            "watch_time_s": rng.choice([0.0, -0.0, 1.5, 2.0, float("nan"), None]),
            "liked": rng.choice([True, False, None]),
            "commented": rng.choice([True, None]),
            "shared": None,
        }
        bad = rng.random()
        if bad < 0.03:
            row["video_id"] = rng.choice([None, "", "  "])
        elif bad < 0.06:
            row["event_ts"] = rng.choice([None, ts(DAY, 24), ts(DAY, -1)])
        elif bad < 0.08:
            row["watch_time_s"] = rng.choice([-1.0, float("inf")])
        rows.append(row)
    return rows


def _write_landing(lake: Lake, n_per_file: int, seed: int) -> list[tuple[str, list[dict]]]:
    """Three files (the third repeats part of the first: a re-delivered file), small row groups
    so that every file reaches DuckDB in several batches."""
    rng = random.Random(seed)
    directory = lake.landing_dir("watch_events", DAY)
    os.makedirs(directory)
    first = _rows(rng, n_per_file)
    contents = [first, _rows(rng, n_per_file), first[: n_per_file // 3] + _rows(rng, 50)]
    files = []
    for k, rows in enumerate(contents):
        path = f"{directory}/part-{k:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=WATCH_EVENTS_SCHEMA)
        pq.write_table(table, path, row_group_size=max(1, n_per_file // 7))
        files.append((path, rows))
    open(f"{directory}/_SUCCESS", "wb").close()
    return files


def _pylist(table: pa.Table) -> list[dict]:
    return [{k: _norm(v) for k, v in r.items()} for r in table.to_pylist()]


def _normed(rows: list[dict]) -> list[dict]:
    return [{k: _norm(v) for k, v in r.items()} for r in rows]


def test_staged_day_matches_plain_python_reference(tmp_path):
    lake = Lake.local(tmp_path)
    files = _write_landing(lake, 3000, seed=3)
    valid, rejects, dups = _reference(files)
    assert dups > 1000 and len(rejects) > 100  # the day really has both
    stage = lake.staging_path("watch_events", DAY)
    with connect(threads=4) as con:
        staged = validate_day(con, lake, WATCH_EVENTS, DAY, stage=stage)
        in_memory = validate_day(con, lake, WATCH_EVENTS, DAY)
    assert isinstance(staged.valid, StagedFile)
    assert staged.rows_read == sum(len(r) for _, r in files)
    assert staged.duplicates_dropped == dups == in_memory.duplicates_dropped
    assert staged.rows_read == staged.rows_valid + staged.rejects.num_rows + dups
    assert _pylist(staged.rejects) == _normed(rejects) == _pylist(in_memory.rejects)
    uri = lake.publish_staged(staged.valid, lake.asset_dir("watch_events", DAY))
    published = pq.read_table(uri)
    assert published.schema.equals(WATCH_EVENTS_SCHEMA)
    assert published.num_rows == staged.rows_valid == len(valid)
    # Same rows in the same order: the reference's, and the in-memory path's.
    assert _pylist(published) == _normed(valid) == _pylist(in_memory.valid)
    assert not os.path.exists(stage)


def test_staged_order_kept_on_many_threads(tmp_path):
    """A larger day scanned by several DuckDB threads is still written in landing order."""
    lake = Lake.local(tmp_path)
    files = _write_landing(lake, 40_000, seed=5)
    valid, _, _ = _reference(files)
    stage = lake.staging_path("watch_events", DAY)
    with connect(threads=4) as con:
        result = validate_day(con, lake, WATCH_EVENTS, DAY, stage=stage)
    assert _pylist(pq.read_table(result.valid.path)) == _normed(valid)


def test_rejected_staged_day_keeps_the_partition(tmp_path):
    lake = Lake.local(tmp_path)
    _write_landing(lake, 300, seed=7)
    directory = lake.asset_dir("watch_events", DAY)

    def stage_once() -> StagedFile:
        with connect() as con:
            result = validate_day(
                con, lake, WATCH_EVENTS, DAY, stage=lake.staging_path("watch_events", DAY)
            )
        assert isinstance(result.valid, StagedFile)
        return result.valid

    # A first try that fails its check leaves no partition, not even an empty dt= folder.
    lake.publish_staged(stage_once(), directory, publish=False)
    assert not os.path.exists(directory)
    assert os.path.exists(f"{lake.rejected_dir(directory)}/{PART_FILE}")
    lake.publish_staged(stage_once(), directory)
    before = pq.read_table(f"{directory}/{PART_FILE}")
    lake.write_table(directory, before.slice(0, 1), publish=False)  # a rejected version
    assert pq.read_table(f"{directory}/{PART_FILE}").equals(before)
    # Nothing staged is left behind.
    assert [n for n in os.listdir(lake.asset_dir("watch_events")) if n.endswith(".tmp")] == []
