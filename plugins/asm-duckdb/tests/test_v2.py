"""Store contract v2 specifics and the defects fixed with it, each through the public API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from asm_kernel.errors import StorageError, StoreLockedError, ValidationError
from asm_kernel.model import Event, Message, Run, RunStatus, Session
from asm_kernel.testing.stores import create_session
from asm_kernel.writes import RunWrite, WriteUnit
from duckdb_helpers import FailingCommits, Gate, until

from asm_duckdb.store import SCHEMA_VERSION, DuckDBStore


async def _running(store: DuckDBStore) -> tuple[Session, Any]:
    """A session with a running run holding a lease; returns the session and the run's fence."""
    s = Session()
    run = Run(session_id=s.id).transition(RunStatus.RUNNING, owner="w1", lease_token=1)
    done = await store.commit(WriteUnit(s.id, new_session=s, new_runs=[RunWrite(run, lease_ttl=600)]))
    return s, done.run(run.id).lease


def _delta(sid: str, i: int) -> Event:
    return Event(session_id=sid, type="message_streamed", payload={"text": f"t{i}"})


# -- one store per file: real paths -------------------------------------------------------------


async def test_the_same_file_by_another_path_is_the_same_store(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "f.duckdb"
    link = tmp_path / "link.duckdb"
    first = DuckDBStore(path)
    await first.open()
    try:
        link.symlink_to(path)
        for other in (tmp_path / "sub" / ".." / "f.duckdb", link):
            with pytest.raises(StoreLockedError, match="another asm store in this process"):
                await DuckDBStore(other).open()
    finally:
        await first.close()
    again = DuckDBStore(link)  # released by close()
    await again.open()
    await again.close()


async def test_a_parent_that_cannot_be_created_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as info:
        await DuckDBStore(blocker / "sub" / "s.duckdb").open()
    assert not isinstance(info.value, StoreLockedError)
    assert str(blocker / "sub") in info.value.message and info.value.hint
    assert info.value.details["file"] == str(blocker / "sub" / "s.duckdb")


# -- write-behind when commits fail ---------------------------------------------------------


async def test_acknowledged_deltas_outlive_failed_commits_and_keep_their_seqs(tmp_path: Path) -> None:
    path = tmp_path / "full.duckdb"
    store = DuckDBStore(path, durability="fast")
    await store.open()
    s, fence = await _running(store)
    acked = [
        (await store.commit(WriteUnit(s.id, [_delta(s.id, i)], fence=fence, durable=False))).events[0] for i in range(5)
    ]
    assert [e.seq for e in acked] == [1, 2, 3, 4, 5] and store.stats.fast_acks == 5
    faults = FailingCommits(store, lambda n: True)  # the disk is full from now on
    with pytest.raises(StorageError, match="5 acknowledged event") as info:
        await store.append(s.id, [Event(session_id=s.id, type="note")])  # a durable point: it must fail
    assert info.value.retryable
    # While the file refuses writes, every write says so (none is acknowledged behind).
    with pytest.raises(StorageError, match="cannot write"):
        await store.commit(WriteUnit(s.id, [_delta(s.id, 9)], fence=fence, durable=False))
    assert store.stats.fast_acks == 5
    faults.restore()  # space again: the owed deltas go first, with the seqs they were given
    (note,) = await store.append(s.id, [Event(session_id=s.id, type="note")])
    assert note.seq == 6
    log = await store.read(s.id)
    assert [(e.id, e.seq) for e in log[:5]] == [(e.id, e.seq) for e in acked]
    await store.close()
    again = DuckDBStore(path)
    await again.open()
    try:
        assert [(e.id, e.seq) for e in await again.read(s.id)] == [(e.id, e.seq) for e in log]
    finally:
        await again.close()


DISK_FULL = textwrap.dedent(
    """
    import asyncio, json, os, resource, signal, sys
    from asm_duckdb.store import DuckDBStore
    from asm_kernel.model import Event, Run, RunStatus, Session
    from asm_kernel.writes import RunWrite, WriteUnit

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    async def main(path):
        store = DuckDBStore(path)
        await store.open()
        s = Session()
        run = Run(session_id=s.id).transition(RunStatus.RUNNING, owner="w", lease_token=1)
        started = await store.commit(WriteUnit(s.id, new_session=s, new_runs=[RunWrite(run, lease_ttl=600)]))
        fence = started.run(run.id).lease
        used = sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (used + 100_000, hard))  # the disk fills up
        acked, errors = [], []
        for i in range(2000):
            delta = Event(session_id=s.id, type="message_streamed", payload={"t": "x" * 400})
            unit = WriteUnit(s.id, [delta], fence=fence, durable=False)
            if i % 10 == 9:
                unit = WriteUnit(s.id, [Event(session_id=s.id, type="note", payload={"t": "y" * 400})])
            try:
                e = (await store.commit(unit)).events[0]
                acked.append([e.id, e.seq])
            except Exception as exc:
                errors.append(type(exc).__name__)
                if len(errors) > 20:
                    break
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
        e = (await store.commit(WriteUnit(s.id, [Event(session_id=s.id, type="note")]))).events[0]
        acked.append([e.id, e.seq])
        await store.close()
        print(json.dumps({"session": s.id, "acked": acked, "errors": sorted(set(errors)), "n_errors": len(errors)}))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_full_disk_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """A real write failure: the child's file size limit (RLIMIT_FSIZE) stands in for a full disk."""
    path = tmp_path / "disk.duckdb"
    out = subprocess.run([sys.executable, "-c", DISK_FULL, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["n_errors"] > 0 and data["errors"] == ["StorageError"], data["errors"]

    async def check() -> None:
        store = DuckDBStore(path)
        await store.open()
        try:
            log = {e.seq: e.id for e in await store.read(data["session"])}
            assert sorted(log) == list(range(1, len(log) + 1))
            for ident, seq in data["acked"]:
                assert log.get(seq) == ident, f"acknowledged ({ident}, {seq}) is not stored as such"
        finally:
            await store.close()

    asyncio.run(check())


# -- a statement error fails its own request only -----------------------------------------------


async def test_a_value_duckdb_cannot_store_fails_only_its_unit(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "iso.duckdb")
    await store.open()
    try:
        sessions = [await create_session(store) for _ in range(3)]
        async with Gate(store) as gate:
            bad_run = Run(session_id=sessions[0].id, lease_token=2**70)  # past BIGINT: passes check_unit
            bad = asyncio.create_task(store.commit(WriteUnit(sessions[0].id, new_runs=[bad_run])))
            goods = [asyncio.create_task(store.append(s.id, [Event(session_id=s.id, type="n")])) for s in sessions]
            await gate.open_when_queued(4)
        with pytest.raises(ValidationError, match="refused this write"):
            await bad
        assert [[e.seq for e in await g] for g in goods] == [[1], [1], [1]]
        assert store.stats.isolated == 1
        assert await store.list_runs(session_id=sessions[0].id) == []
    finally:
        await store.close()


# -- schema v1 -> v2 ----------------------------------------------------------------------------

#: The tables as asm-duckdb 0.1 (store schema version 1) created them.
V1_SCHEMA = [
    "CREATE TABLE asm_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE sessions (id VARCHAR PRIMARY KEY, agent_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
        metadata VARCHAR NOT NULL, tags VARCHAR[] NOT NULL, created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE runs (id VARCHAR PRIMARY KEY, session_id VARCHAR NOT NULL, status VARCHAR NOT NULL,
        input VARCHAR, output VARCHAR, usage VARCHAR NOT NULL, cost DOUBLE, provider VARCHAR, model VARCHAR,
        stop_reason VARCHAR, error VARCHAR, idempotency_key VARCHAR, metadata VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ)""",
    "CREATE INDEX runs_session_idempotency ON runs (session_id, idempotency_key)",
    """CREATE TABLE events (id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, seq BIGINT NOT NULL, run_id VARCHAR,
        type VARCHAR NOT NULL, payload VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, schema_version INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq))""",
    "CREATE UNIQUE INDEX events_id ON events (id)",
]
_USAGE = json.dumps({"input_tokens": 1, "output_tokens": 2})


def _v1_file(path: Path) -> dict[str, str]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    con = duckdb.connect(str(path))
    for ddl in V1_SCHEMA:
        con.execute(ddl)
    con.execute("INSERT INTO asm_meta VALUES ('application', 'asm'), ('schema_version', '1'), ('created_at', 'x')")
    con.execute("INSERT INTO sessions VALUES ('ses_1', 'a', 'active', '{}', [], ?, ?)", [now, now])
    user = json.dumps({"role": "user", "content": [{"type": "text", "text": "hi"}]})
    runs = {
        "run_record_only": "completed",  # terminal record, no terminal event (crash between writes)
        "run_log_only": "running",  # the log says completed, the record never caught up
        "run_fine": "completed",
    }
    for _i, (rid, status) in enumerate(runs.items()):
        con.execute(
            "INSERT INTO runs VALUES (?, 'ses_1', ?, ?, NULL, ?, 0.5, 'p', 'm', 'end_turn', NULL, NULL, '{}', ?, ?, ?)",
            [rid, status, user, _USAGE, now, now, now if status == "completed" else None],
        )
    events = [("run_started", "run_record_only"), ("run_started", "run_log_only"), ("run_completed", "run_log_only"),
              ("run_started", "run_fine"), ("run_completed", "run_fine")]  # fmt: skip
    for seq, (kind, rid) in enumerate(events, 1):
        con.execute("INSERT INTO events VALUES (?, 'ses_1', ?, ?, ?, '{}', ?, 1)", [f"evt_{seq}", seq, rid, kind, now])
    con.close()
    return runs


async def test_a_v1_file_is_migrated_and_its_runs_repaired(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    _v1_file(path)
    store = DuckDBStore(path)
    await store.open()
    try:
        log = await store.read("ses_1")
        assert [e.seq for e in log] == [1, 2, 3, 4, 5, 6]
        added = log[-1]
        assert (added.type, added.run_id, added.payload["repaired"]) == ("run_completed", "run_record_only", True)
        assert (await store.get_run("run_log_only")).status is RunStatus.COMPLETED
        fine = await store.get_run("run_fine")
        assert fine.status is RunStatus.COMPLETED and fine.input == Message.user("hi")
        assert (fine.owner, fine.lease_token, fine.lease_expires_at) == (None, 0, None)
    finally:
        await store.close()
    con = duckdb.connect(str(path))
    assert con.execute("SELECT value FROM asm_meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    # Version 3: the five migrated events sit sorted in the last level, merged rows in the log;
    # the repair's event (written by the 1 -> 2 step) moved with them.
    assert con.execute("SELECT count(*) FROM events_l3").fetchone() == (6,)
    assert con.execute("SELECT count(*), count(payload), max(n) FROM events_log").fetchone() == (6, 0, 6)
    assert con.execute("SELECT value FROM asm_meta WHERE key = 'merged_upto'").fetchone() == ("6",)
    assert "events_id" not in {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()}
    con.close()
    again = DuckDBStore(path)  # a second open changes nothing
    await again.open()
    try:
        assert len(await again.read("ses_1")) == 6
    finally:
        await again.close()


async def test_an_old_file_opened_read_only_is_refused_until_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v1ro.duckdb"
    _v1_file(path)
    with pytest.raises(StorageError, match="schema version 1"):
        await DuckDBStore(path, read_only=True).open()


async def test_deltas_acknowledged_while_the_writer_is_idle_are_committed_without_another_write(
    tmp_path: Path,
) -> None:
    """The kill -9 window of write-behind is BEHIND_MAX_DELAY even when nothing else is written
    (it was unbounded when the writer was idle: a stalled stream's deltas waited for the next
    write, however late)."""
    path = tmp_path / "idle.duckdb"
    store = DuckDBStore(path, durability="fast")
    await store.open()
    try:
        s, fence = await _running(store)
        await asyncio.sleep(0.1)  # the writer has answered and waits with nothing owed
        await store.commit(WriteUnit(s.id, [_delta(s.id, 0)], fence=fence, durable=False))
        assert store.stats.fast_acks == 1  # acknowledged on this thread, the writer not asked
        assert store._writer is not None
        await until(lambda: store._writer.owed == 0, "the owed delta committed")  # type: ignore[union-attr]
        with duckdb.connect(str(path)) as other:  # this process's database: sees what committed
            got = other.execute("SELECT seq FROM events WHERE session_id = ?", [s.id]).fetchall()
        assert got == [(1,)]
    finally:
        await store.close()


async def test_reads_of_owed_events_commit_them_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asm_duckdb.writer.BEHIND_MAX_DELAY", 600.0)  # only the read commits them
    store = DuckDBStore(tmp_path / "owed.duckdb", durability="fast")
    await store.open()
    try:
        s, fence = await _running(store)
        await store.commit(WriteUnit(s.id, [_delta(s.id, 0)], fence=fence, durable=False))
        assert store._writer is not None and store._writer.owed == 1
        assert [e.seq for e in await store.read(s.id)] == [1]  # what a reader saw survives a crash
        assert store._writer.owed == 0
    finally:
        await store.close()


def test_the_writer_module_keeps_duckdb_lazy() -> None:
    code = "import sys, asm_duckdb, asm_duckdb.settings; print('duckdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"
