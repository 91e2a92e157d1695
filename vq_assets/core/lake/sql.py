"""DuckDB connections configured the same way everywhere, and the one way a day enters SQL."""

from __future__ import annotations

import re

import duckdb

from vq_assets.core.lake.store import is_iso_day

# A size DuckDB's memory_limit understands, and nothing else: the value comes from the
# environment (VQ_DUCKDB_MEMORY_LIMIT), so it is checked before DuckDB ever sees it.
_MEMORY_LIMIT = re.compile(
    r"([0-9]+(?:\.[0-9]+)?) ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)", flags=re.IGNORECASE
)
_UNIT_BYTES = {
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
# DuckDB's buffer manager gets this share of VQ_DUCKDB_MEMORY_LIMIT: memory DuckDB allocates
# outside it (hash-table directories, result conversion) overshot the limit by 4% on a 100M-event
# day (bench/scale.py), and DuckDB's own default keeps the same headroom (80% of the RAM).
BUFFER_SHARE = 0.8


def buffer_limit(memory_limit: str) -> str:
    """DuckDB's `memory_limit` for a process budget of `memory_limit` (``BUFFER_SHARE`` of it;
    a percentage of the RAM is passed as it is)."""
    match = _MEMORY_LIMIT.fullmatch(memory_limit)
    if not match:
        raise ValueError(
            f"DuckDB memory_limit (VQ_DUCKDB_MEMORY_LIMIT) must be a number with a unit "
            f"(KB, MB, GB, TB, KiB, MiB, GiB, TiB or %), e.g. '4GB'; got {memory_limit!r}"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        return memory_limit
    return f"{max(1, int(number * _UNIT_BYTES[unit] * BUFFER_SHARE / 2**20))}MiB"


def connect(
    *, memory_limit: str | None = None, threads: int | None = None, temp_dir: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection that never reaches for the network.

    Extensions cannot be downloaded here, so autoloading is off: without ICU, DuckDB treats
    every TIMESTAMPTZ as a UTC instant, which is exactly the contract's convention.
    `memory_limit` bounds DuckDB's memory (its buffer manager gets ``BUFFER_SHARE`` of it, see
    ``buffer_limit``); past it, operators spill to `temp_dir`. The settings
    go in as connection options, never into SQL text, so no value can break out into a
    statement (a quote in VQ_HOME, which `temp_dir` derives from, included).
    """
    config: dict[str, str | int] = {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }
    if memory_limit:
        config["memory_limit"] = buffer_limit(memory_limit)
    if threads:
        config["threads"] = int(threads)
    if temp_dir:
        config["temp_directory"] = temp_dir
    return duckdb.connect(config=config)


def sql_date(day: str) -> str:
    """`day` for a SQL literal (`DATE '{sql_date(day)}'`): refused unless exactly YYYY-MM-DD.

    Days come from partition keys and folder names; checking them here keeps a crafted key
    (`2026-01-01' OR 1=1 --`) out of every query that interpolates one.
    """
    if not is_iso_day(day):
        raise ValueError(f"not a day (YYYY-MM-DD): {day!r}")
    return day
