"""asm_kernel.testing.backends: the stores a suite can test on, fresh tables, a child to kill -9.

The kernel env has no store plugin installed (and the integration env has them all), so these
tests hold either way: nothing here opens a DuckDB file or connects to Postgres.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from asm_kernel.testing.backends import (
    STORES,
    FreshStores,
    durable_store,
    kill_after_acks,
    postgres_dsn,
    store_problem,
)

# A child that acknowledges ``argv[2]`` writes, flushed, then hangs until it is killed; its pid
# goes to the file ``argv[1]`` first so the test can check the process is gone afterwards.
CHILD = """
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
for n in range(int(os.environ.get("ACK_FIRST", "0")), int(sys.argv[2])):
    print(f"ACK {n}", flush=True)
if sys.argv[3] == "hang":
    time.sleep(600)
"""


def child(pidfile: Path, acks: int, then: str = "hang") -> list[str]:
    return [sys.executable, "-c", CHILD, str(pidfile), str(acks), then]


def assert_gone(pidfile: Path) -> None:
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no such process any more


def test_memory_can_always_be_tested() -> None:
    assert "memory" in STORES
    assert store_problem("memory") is None


def test_an_unknown_store_says_so() -> None:
    assert store_problem("nope") == "unknown store 'nope'"


def test_durable_store_names_a_testable_store_or_says_why_none() -> None:
    name, reason = durable_store()
    if name is None:
        assert reason.startswith("no durable store to kill -9 against: ")
        assert "duckdb: " in reason and "postgres: " in reason
    else:
        assert name in ("duckdb", "postgres") and reason == ""
        assert store_problem(name) is None


def test_postgres_dsn_is_asm_pg_dsn_or_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_PG_DSN", "postgresql://someone@db.invalid:6543/x")
    assert postgres_dsn() == "postgresql://someone@db.invalid:6543/x"
    monkeypatch.delenv("ASM_PG_DSN")
    assert postgres_dsn() == "postgresql://postgres@127.0.0.1:5432/test"


def test_memory_tables(tmp_path: Path) -> None:
    stores = FreshStores("memory", tmp_path)
    assert stores() == {"use": "memory"}
    stores.drop()  # nothing to drop


def test_duckdb_tables_are_new_files_under_the_directory(tmp_path: Path) -> None:
    stores = FreshStores("duckdb", tmp_path, prefix="case")
    first, second = stores(), stores()
    assert first["use"] == second["use"] == "duckdb"
    assert first["path"] != second["path"]
    for table in (first, second):
        path = Path(table["path"])
        assert path.parent == tmp_path
        assert path.name.startswith("case-") and path.suffix == ".duckdb"
        assert not path.exists()  # only the table is made; the store creates the file
    stores.drop()  # no schemas: needs no Postgres driver


def test_postgres_tables_are_new_schemas_on_the_dsn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASM_PG_DSN", "postgresql://someone@db.invalid/x")
    stores = FreshStores("postgres", tmp_path, prefix="case")
    first, second = stores(), stores()
    assert first["use"] == "postgres" and first["dsn"] == "postgresql://someone@db.invalid/x"
    assert first["schema"] != second["schema"]
    assert first["schema"].startswith("case_") and second["schema"].startswith("case_")
    assert stores.schemas == [first["schema"], second["schema"]]  # what drop() would remove


def test_an_unknown_store_has_no_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown store 'nope'"):
        FreshStores("nope", tmp_path)


def test_kill_after_acks_kills_the_child_once_it_acknowledged_enough(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    assert kill_after_acks(child(pidfile, 1000), 5) == 4  # ACK 0 .. ACK 4: five acknowledged
    assert_gone(pidfile)


def test_kill_after_acks_tells_a_child_that_stopped_first(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    assert kill_after_acks(child(pidfile, 3, then="exit"), 10) == 2
    assert_gone(pidfile)
    assert kill_after_acks(child(pidfile, 0, then="exit"), 10) == -1


def test_kill_after_acks_passes_the_environment(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    assert kill_after_acks(child(pidfile, 1000), 1, env={**os.environ, "ACK_FIRST": "7"}) == 7
    assert_gone(pidfile)
