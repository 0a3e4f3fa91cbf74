"""Migrations, the schema version check, ``asm db``, and the query plans of the hot reads."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asm_kernel.cli import main as asm
from asm_kernel.model import Session
from asm_kernel.writes import WriteUnit
from pg_helpers import DSN, admin, sql, store_for

from asm_postgres import schema
from asm_postgres.errors import SchemaOutdatedError, SchemaTooNewError


async def test_opening_creates_the_schema_at_the_latest_version(pg_schema: str) -> None:
    store = store_for(pg_schema)
    await store.open()
    await store.close()
    rows = sql(f'SELECT version, description, applied_by FROM "{pg_schema}".asm_schema_version')
    assert [r[0] for r in rows] == [schema.LATEST]
    assert rows[0][2].startswith("asm-postgres ")
    tables = {r[0] for r in sql("SELECT tablename FROM pg_tables WHERE schemaname = %s", [pg_schema])}
    assert tables == {"asm_schema_version", "sessions", "runs", "events"}
    status = await store.schema_status()
    assert (status.state, status.version, status.pending) == ("current", schema.LATEST, ())


async def test_a_newer_schema_is_refused_and_left_alone(pg_schema: str) -> None:
    store = store_for(pg_schema)
    await store.upgrade()
    sql(f"INSERT INTO \"{pg_schema}\".asm_schema_version VALUES (999, 'from the future', now(), 'asm-postgres 9')")
    for auto in (True, False):
        with pytest.raises(SchemaTooNewError) as info:
            await store_for(pg_schema, auto_upgrade=auto).open()
        assert "version 999" in str(info.value) and "pip install -U asm-postgres" in (info.value.hint or "")
    with pytest.raises(SchemaTooNewError):
        await store.upgrade()
    assert (await store.schema_status()).state == "too new"


async def test_without_auto_upgrade_an_old_schema_is_refused_until_upgraded(pg_schema: str) -> None:
    store = store_for(pg_schema, auto_upgrade=False)
    with pytest.raises(SchemaOutdatedError) as info:
        await store.open()
    assert "asm db upgrade" in (info.value.hint or "") and "does not exist" in str(info.value)
    assert sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", [pg_schema]) == []  # nothing created
    assert await store.upgrade() == (0, schema.LATEST)
    assert await store.upgrade() == (schema.LATEST, schema.LATEST)
    await store.open()
    await store.close()


async def test_migrations_apply_in_order_once_even_when_started_together(pg_schema: str) -> None:
    later = schema.Migration(2, "a column for a test", ["ALTER TABLE {s}.sessions ADD COLUMN note text"])
    migrations = (*schema.MIGRATIONS, later)
    target = store_for(pg_schema).target

    async def migrate() -> tuple[int, int]:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
        try:
            return await schema.upgrade(conn, target, by="test", migrations=migrations)
        finally:
            await conn.close()

    results = await asyncio.gather(*(migrate() for _ in range(4)))
    assert sorted(results) == [(0, 2), (2, 2), (2, 2), (2, 2)]
    assert [r[0] for r in sql(f'SELECT version FROM "{pg_schema}".asm_schema_version ORDER BY 1')] == [1, 2]
    # This asm-postgres (which knows version 1) now finds the schema too new.
    with pytest.raises(SchemaTooNewError):
        await store_for(pg_schema).open()


def _config(tmp_path: Path, schema_name: str, **extra: Any) -> str:
    lines = ["[store]", 'use = "postgres"', f'dsn = "{DSN}"', f'schema = "{schema_name}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    path = tmp_path / "asm.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_asm_db_status_and_upgrade(pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, pg_schema, auto_upgrade=False)
    assert asm(["db", "status", "--config", config, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert (before["state"], before["version"], before["pending"]) == ("missing", 0, [1])
    assert pg_schema in before["target"] and "127.0.0.1:5432/test" in before["target"]
    assert asm(["db", "upgrade", "--config", config]) == 0
    assert "upgraded from version 0 to 1" in capsys.readouterr().out
    assert asm(["db", "upgrade", "--config", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "target": before["target"],
        "schema": pg_schema,
        "from": 1,
        "to": 1,
    }
    assert asm(["db", "status", "--config", config]) == 0
    text = capsys.readouterr().out
    assert "version 1 (current; this asm-postgres needs 1)" in text and "sessions, runs and the event log" in text
    assert asm(["sessions", "list", "--config", config, "--json"]) == 0  # the kernel opens it now


def test_asm_db_refuses_another_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "asm.toml"
    path.write_text('[store]\nuse = "memory"\n')
    assert asm(["db", "status", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "store.use" in err and "'memory'" in err and 'use = "postgres"' in err


def _plan(statement: str, params: list[Any]) -> list[dict[str, Any]]:
    """Every node of the statement's plan."""
    with admin() as conn:
        rows = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchall()
    nodes: list[dict[str, Any]] = []
    stack = [rows[0][0][0]["Plan"]]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    return nodes


def _range_scan(nodes: list[dict[str, Any]], index: str, *conds: str) -> dict[str, Any]:
    """The node that scans ``index`` with an Index Cond on ``conds``; no node scans a whole table."""
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], nodes
    scans = [n for n in nodes if n.get("Index Name") == index]
    assert scans, f"no scan of {index}: {[n['Node Type'] for n in nodes]}"
    cond = scans[0].get("Index Cond", "")
    for c in conds:
        assert c in cond, (c, cond)
    return scans[0]


async def test_the_hot_reads_are_index_range_scans(pg_schema: str) -> None:
    """The last N events and a session's (full or partial) read are range scans of the primary key.

    A full read of a session whose events are interleaved with others' may come as a bitmap scan
    of the same index range (then sorted): each event sits on its own heap page, so the planner
    fetches the pages in physical order. Either way no other session's rows are read.
    """
    store = store_for(pg_schema)
    await store.open()
    try:
        sids = []
        for _ in range(50):
            s = Session()
            await store.commit(WriteUnit(s.id, new_session=s))
            sids.append(s.id)
        # 50 sessions x 400 interleaved events, copied in directly (the plan is what is tested).
        now = datetime.now(UTC)
        columns = "session_id, seq, ts, schema_version, id, run_id, type, payload"
        with admin() as conn, conn.cursor().copy(f'COPY "{pg_schema}".events ({columns}) FROM STDIN') as copy:
            for seq in range(1, 401):
                for sid in sids:
                    copy.write_row((sid, seq, now, 1, f"evt_{sid}_{seq}", None, "note", '{"x": 1}'))
        sql(f'UPDATE "{pg_schema}".sessions SET last_seq = 400')
        sql(f'ANALYZE "{pg_schema}".events')
        statements = store.sql
        last = _range_scan(_plan(statements.last, [sids[3], 50]), "events_pkey", "session_id")
        assert last["Node Type"] == "Index Scan" and last["Scan Direction"] == "Backward"
        read = statements.read_events()
        _range_scan(_plan(read, [sids[3], 0, None]), "events_pkey", "session_id", "seq >")
        _range_scan(_plan(read, [sids[3], 390, None]), "events_pkey", "session_id", "seq >")
        _range_scan(_plan(statements.events_by_id, [["evt_x"]]), "events_id", "id = ANY")
        assert [e.seq for e in await store.last(sids[3], 3)] == [398, 399, 400]
    finally:
        await store.close()
