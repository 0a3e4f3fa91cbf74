"""Batched session and run writes, and reads answered from the in-memory tail.

The writer gathers a group's session and run writes into a few statements (last write of a
record wins); these tests pile many requests from concurrent tasks into one group and check
the stored rows, that each bad request fails alone, and how many statements the group took.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asm_kernel.errors import AlreadyExistsError, RunNotFoundError, SessionNotFoundError
from asm_kernel.events import EventType
from asm_kernel.model import Event, Message, Run, RunStatus, Session, SessionStatus, TextBlock, Usage
from attrs import evolve
from duckdb_helpers import Gate

from asm_duckdb.store import DuckDBStore, _Tail

T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


class _Counting:
    """Wraps the writer's connection and counts the statements it runs."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> Any:
        words = sql.split()
        table = words[2] if words[0] == "INSERT" else words[1] if words[0] == "UPDATE" else ""
        self.statements.append(f"{words[0]} {table}".strip())
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _run(session_id: str, i: int, **kw: Any) -> Run:
    return Run(
        session_id=session_id, id=f"run_{i:03d}", input=Message.user(f"q{i}"), idempotency_key=f"k{i}",
        metadata={"i": i}, created_at=T0 + timedelta(seconds=i), **kw,
    )


def _done(run: Run, i: int) -> Run:
    return run.transition(RunStatus.RUNNING, started_at=T0 + timedelta(seconds=i, milliseconds=1)).transition(
        RunStatus.COMPLETED, output=Message("assistant", (TextBlock(f"a{i}"),)), usage=Usage(i, i + 1),
        cost=i / 4, provider="p", model="m", stop_reason="end_turn",
        finished_at=T0 + timedelta(seconds=i, milliseconds=9),
    )


def _active(session: Session, n: int) -> Session:
    return evolve(session, status=SessionStatus.ACTIVE, metadata={"n": n}, tags=("x", f"{n}"))


@pytest.fixture(params=["safe", "fast"])
async def store(request: Any, tmp_path: Path) -> Any:
    s = DuckDBStore(tmp_path / "b.duckdb", durability=request.param)
    await s.open()
    yield s
    await s.close()


async def test_one_group_of_many_run_and_session_writes(store: DuckDBStore, tmp_path: Path) -> None:
    sessions = [await store.create_session(Session(agent_id=f"a{i}", tags=("t",))) for i in range(4)]
    old = [await store.create_run(_run(sessions[i % 4].id, 100 + i)) for i in range(12)]
    async with Gate(store) as gate:
        counting = store._conn = _Counting(store._conn)  # type: ignore[assignment]

        # Thirty new runs, each created then moved to running then completed, all in one group.
        new = [_run(sessions[i % 4].id, i) for i in range(30)]
        running = [r.transition(RunStatus.RUNNING, started_at=T0) for r in new]
        creates = [asyncio.create_task(store.create_run(r)) for r in new]
        starts = [asyncio.create_task(store.update_run(r)) for r in running]
        finishes = [asyncio.create_task(store.update_run(_done(r, i))) for i, r in enumerate(new)]
        # Runs stored by an earlier group, updated twice here: the second update wins.
        firsts = [asyncio.create_task(store.update_run(r.transition(RunStatus.RUNNING))) for r in old]
        seconds = [asyncio.create_task(store.update_run(_done(r, 100 + i))) for i, r in enumerate(old)]
        # Bad requests fail alone.
        missing_run = asyncio.create_task(store.update_run(Run(session_id=sessions[0].id, id="run_missing")))
        early = Run(session_id=sessions[1].id, id="run_early")
        too_early = asyncio.create_task(store.update_run(early.transition(RunStatus.RUNNING)))  # before its create
        late_create = asyncio.create_task(store.create_run(early))
        twice = asyncio.create_task(store.create_run(_run(sessions[0].id, 0)))  # same id as new[0], same group
        no_session = asyncio.create_task(store.create_run(Run(session_id="nope", id="run_orphan")))
        # Sessions: a new one updated in the same group, updates of stored ones, an unknown one.
        fresh = Session(agent_id="fresh")
        fresh_create = asyncio.create_task(store.create_session(fresh))
        fresh_update = asyncio.create_task(store.update_session(fresh.transition(SessionStatus.ACTIVE)))
        session_updates = [
            asyncio.create_task(store.update_session(_active(s, n))) for s in sessions for n in range(2)
        ]
        missing_session = asyncio.create_task(store.update_session(Session(id="sess_missing")))
        more = [Session(agent_id=f"m{i}", tags=tuple(f"t{k}" for k in range(i)), metadata={"i": i}) for i in range(6)]
        more_creates = [asyncio.create_task(store.create_session(m)) for m in more]
        appends = [asyncio.create_task(store.append(s.id, [Event(session_id=s.id, type="note")])) for s in sessions]
        queued = len(new) * 3 + len(old) * 2 + 5 + 2 + len(session_updates) + 1 + len(more) + len(appends)
        commits = store.stats.commits
        await gate.open_when_queued(queued)

    assert await asyncio.gather(*creates) == new
    assert await asyncio.gather(*starts) == running
    await asyncio.gather(*finishes, *firsts, *seconds, *session_updates, *appends, fresh_create, fresh_update)
    assert await asyncio.gather(*more_creates) == more
    with pytest.raises(RunNotFoundError, match="run_missing"):
        await missing_run
    with pytest.raises(RunNotFoundError, match="run_early"):
        await too_early
    assert await late_create == early
    with pytest.raises(AlreadyExistsError):
        await twice
    with pytest.raises(SessionNotFoundError):
        await no_session
    with pytest.raises(SessionNotFoundError, match="sess_missing"):
        await missing_session
    assert store.stats.commits - commits == 2  # the gate's group, then everything else at once

    # After the gate's group: one transaction of a few batched statements, not one statement
    # per request (the SELECT looks up the unknown session "nope").
    group = counting.statements[counting.statements.index("COMMIT") + 1 :]
    assert group.count("BEGIN") == group.count("COMMIT") == 1 and group[-1] == "COMMIT", group
    assert len(group) <= 9, group
    assert group.count("UPDATE runs") == group.count("INSERT runs") == group.count("INSERT sessions") == 1, group

    async def check(s: DuckDBStore) -> None:
        for i, r in enumerate(new):
            assert await s.get_run(r.id) == _done(r, i)
        for i, r in enumerate(old):
            assert await s.get_run(r.id) == _done(r, 100 + i)
        assert await s.get_run(early.id) == early
        for s0 in sessions:
            assert await s.get_session(s0.id) == _active(s0, 1)
        assert (await s.get_session(fresh.id)).status is SessionStatus.ACTIVE
        assert [await s.get_session(m.id) for m in more] == more
        for missing in ("run_missing", "run_orphan"):
            with pytest.raises(RunNotFoundError):
                await s.get_run(missing)
        with pytest.raises(SessionNotFoundError):
            await s.get_session("sess_missing")
        assert await s.find_run_by_idempotency_key(sessions[0].id, "k0") == _done(new[0], 0)
        assert len(await s.list_runs(status=RunStatus.COMPLETED)) == len(new) + len(old)

    await check(store)
    await store.close()
    again = DuckDBStore(store.path)
    await again.open()
    try:
        await check(again)
    finally:
        await again.close()


async def test_records_stored_before_this_process_are_found(tmp_path: Path) -> None:
    """Creates are optimistic: a stored id the writer has not seen fails on the primary key alone."""
    path = tmp_path / "old.duckdb"
    first = DuckDBStore(path)
    await first.open()
    s = await first.create_session(Session())
    run = await first.create_run(_run(s.id, 1))
    await first.close()

    store = DuckDBStore(path)
    await store.open()
    try:
        async with Gate(store) as gate:
            dup_session = asyncio.create_task(store.create_session(s))
            dup_run = asyncio.create_task(store.create_run(run))
            update = asyncio.create_task(store.update_run(_done(run, 1)))
            other = asyncio.create_task(store.create_run(_run(s.id, 2)))
            note = asyncio.create_task(store.append(s.id, [Event(session_id=s.id, type="note")]))
            await gate.open_when_queued(5)
        with pytest.raises(AlreadyExistsError):
            await dup_session
        with pytest.raises(AlreadyExistsError):
            await dup_run
        assert await update == _done(run, 1)
        assert (await other).id == "run_002"
        assert [e.seq for e in await note] == [1]
        assert store.stats.retries == 1
        assert await store.get_run(run.id) == _done(run, 1)
        assert await store.get_session(s.id) == s
    finally:
        await store.close()


async def test_reads_from_the_tail_equal_reads_from_duckdb(store: DuckDBStore) -> None:
    s = await store.create_session(Session())
    types = ["note", EventType.MESSAGE_STREAMED, "other"]
    for i in range(60):
        batch = [Event(session_id=s.id, type=types[(i + k) % 3], payload={"i": i, "k": k, "t": (1, 2)}) for k in (0, 1)]
        await store.append(s.id, batch)
    queries: list[dict[str, Any]] = [
        {}, {"after": 100}, {"after": 119}, {"after": 120}, {"after": 5, "before": 9}, {"after": 3, "limit": 4},
        {"types": ["note"]}, {"after": 50, "types": ["other", "note"], "limit": 7}, {"limit": 0}, {"before": 1},
    ]
    reader_calls = 0
    real_read = store._read

    async def counted(*args: Any) -> Any:
        nonlocal reader_calls
        reader_calls += 1
        return await real_read(*args)

    store._read = counted  # type: ignore[method-assign]
    from_tail = [await store.read(s.id, **q) for q in queries]
    last_tail = [await store.last(s.id, n) for n in (0, 1, 5, 120, 500)]
    assert reader_calls == 0  # all answered from memory
    store._tail.clear()
    from_db = [await store.read(s.id, **q) for q in queries]
    last_db = [await store.last(s.id, n) for n in (0, 1, 5, 120, 500)]
    assert reader_calls == len(queries) + 5
    assert from_tail == from_db
    assert last_tail == last_db
    assert from_tail[0][0].payload == {"i": 0, "k": 0, "t": [1, 2]}  # as stored (JSON), like a DuckDB read
    assert [e.seq for e in from_tail[0]] == list(range(1, 121))
    assert {type(e.type) for e in from_tail[0]} == {type(e.type) for e in from_db[0]} == {str}


async def test_a_small_tail_falls_back_to_duckdb(store: DuckDBStore) -> None:
    store._tail = _Tail(max_bytes=6 * 300, max_rows=4)
    a = await store.create_session(Session())
    b = await store.create_session(Session())
    for i in range(10):
        await store.append(a.id, [Event(session_id=a.id, type="note", payload={"i": i})])
    await store.append(b.id, [Event(session_id=b.id, type="note", payload={"i": i}) for i in range(3)])
    assert [e.seq for e in await store.read(a.id)] == list(range(1, 11))  # older than the tail: DuckDB
    assert [e.seq for e in await store.read(a.id, after=7)] == [8, 9, 10]
    assert [e.seq for e in await store.last(a.id, 8)] == list(range(3, 11))
    assert [e.payload["i"] for e in await store.read(b.id)] == [0, 1, 2]
    for i in range(3, 30):  # b's rows push a out of the byte budget
        await store.append(b.id, [Event(session_id=b.id, type="note", payload={"i": i})])
    assert [e.seq for e in await store.read(a.id, after=8)] == [9, 10]
    assert [e.seq for e in await store.last(b.id, 2)] == [29, 30]
    with pytest.raises(SessionNotFoundError):
        await store.read("missing")
