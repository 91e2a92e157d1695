"""DuckDB connections configured the same way everywhere."""

from __future__ import annotations

import duckdb


def connect(
    *, memory_limit: str | None = None, threads: int | None = None, temp_dir: str | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-process DuckDB connection that never reaches for the network.

    Extensions cannot be downloaded here, so autoloading is off: without ICU, DuckDB treats
    every TIMESTAMPTZ as a UTC instant, which is exactly the contract's convention.
    `memory_limit` bounds DuckDB's memory; past it, operators spill to `temp_dir`.
    """
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir:
        con.execute(f"SET temp_directory = '{temp_dir}'")
    return con
