"""Settings and partition keys never become SQL (DESIGN §3's lake, §9's resources).

VQ_DUCKDB_MEMORY_LIMIT used to be pasted into `SET memory_limit = '...'`, so a crafted value
ran its own statements; VQ_DUCKDB_TEMP_DIR (derived from VQ_HOME) was pasted the same way, so a
quote in the path broke every connection. Days interpolated into SQL are checked to be days.
"""

from pathlib import Path

import pytest

from vq_assets.core.labels.windows import labels_from_partials
from vq_assets.core.lake.sql import buffer_limit, connect, sql_date
from vq_assets.resources import DuckDBResource


def _one(con, sql: str):
    return con.sql(sql).fetchall()[0][0]


def _crafted(target: Path) -> str:
    return f"1GB'; COPY (SELECT 1) TO '{target}'; --"


@pytest.mark.parametrize("via", ["core", "resource"])
def test_a_crafted_memory_limit_is_refused_and_runs_nothing(tmp_path, via):
    target = tmp_path / "pwn.csv"
    value = _crafted(target)
    with pytest.raises(ValueError, match="VQ_DUCKDB_MEMORY_LIMIT") as err:
        if via == "core":
            connect(memory_limit=value)
        else:
            DuckDBResource(memory_limit=value).connect()
    assert repr(value) in str(err.value)
    assert not target.exists()


@pytest.mark.parametrize("value", ["4GB", "1.5 GiB", "512mb", "80%"])
def test_a_well_formed_memory_limit_is_applied(value):
    with connect(memory_limit=value) as con:
        assert _one(con, "SELECT current_setting('memory_limit')").endswith(("MiB", "GiB"))


@pytest.mark.parametrize("value", ["1000", "GB", "-1GB", "1GB;", "1 GB ", "1e9GB", "1GB\n"])
def test_a_malformed_memory_limit_is_refused(value):
    with pytest.raises(ValueError, match="memory_limit"):
        connect(memory_limit=value)


def test_a_temp_dir_with_a_quote_opens_and_spills_there(tmp_path):
    home = tmp_path / "vq home's"  # VQ_HOME exists; DuckDB creates its spill folder inside
    home.mkdir()
    spill = home / "duckdb_spill"
    with connect(memory_limit="20MB", threads=1, temp_dir=str(spill)) as con:
        assert _one(con, "SELECT current_setting('temp_directory')") == str(spill)
        # ~32 MB of temp table under a 20 MB limit: DuckDB must page it out to `spill`.
        con.execute("CREATE TEMP TABLE t AS SELECT i, hash(i) AS h FROM range(2000000) r(i)")
        spilled = [p for (p, _) in con.sql("SELECT * FROM duckdb_temporary_files()").fetchall()]
        assert spilled and all(Path(p).parent == spill for p in spilled)
        assert _one(con, "SELECT count(*) FROM t") == 2_000_000


def test_sql_date_passes_days_and_refuses_anything_else():
    assert sql_date("2026-01-01") == "2026-01-01"
    for bad in ("2026-01-01' OR 1=1 --", "2026-01-01'", "20260101", "2026-02-30", ""):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            sql_date(bad)


def test_a_crafted_day_never_reaches_a_query():
    with connect() as con:
        con.execute("CREATE TABLE pwned (x INT)")
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            labels_from_partials(con, "2026-01-01'; DROP TABLE pwned; --")
        assert _one(con, "SELECT count(*) FROM pwned") == 0


def test_duckdb_keeps_headroom_inside_the_configured_budget():
    # VQ_DUCKDB_MEMORY_LIMIT is the process budget; DuckDB's buffer manager gets 80% of it.
    assert buffer_limit("4GB") == f"{int(4e9 * 0.8 / 2**20)}MiB"
    assert buffer_limit("1GiB") == "819MiB"
    assert buffer_limit("50%") == "50%"
    with connect(memory_limit="1GiB") as con:
        assert _one(con, "SELECT current_setting('memory_limit')") == "819.0 MiB"
