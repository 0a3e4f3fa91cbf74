"""One group of many units, and reads answered from the in-memory tail.

The writer gathers a group's session and run writes into a few statements (the last write of
a record wins); these tests pile many units from concurrent tasks into one group and check the
stored records, that each unit whose condition fails fails alone, and how many statements the
group took.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from asm_kernel.errors import AlreadyExistsError, RunNotFoundError, SessionNotFoundError, WriteConflictError
from asm_kernel.events import EventType
from asm_kernel.model import Event, Message, Run, RunStatus, Session, SessionStatus, TextBlock, Usage
from asm_kernel.testing.stores import create_run, create_session
from asm_kernel.writes import RunWrite, WriteUnit
from duckdb_helpers import Gate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asm_duckdb.caches import Tail
from asm_duckdb.store import DuckDBStore

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


def _run(session_id: str, i: int) -> Run:
    return Run(
        session_id=session_id,
        id=f"run_{i:03d}",
        input=Message.user(f"q{i}"),
        idempotency_key=f"k{i}",
        metadata={"i": i},
        created_at=T0 + timedelta(seconds=i),
    )


def _done(run: Run, i: int) -> Run:
    return run.transition(RunStatus.RUNNING, started_at=T0 + timedelta(seconds=i, milliseconds=1)).transition(
        RunStatus.COMPLETED,
        output=Message("assistant", (TextBlock(f"a{i}"),)),
        usage=Usage(i, i + 1),
        cost=i / 4,
        provider="p",
        model="m",
        stop_reason="end_turn",
        finished_at=T0 + timedelta(seconds=i, milliseconds=9),
    )


@pytest.fixture(params=["safe", "fast"])
async def store(request: Any, tmp_path: Path) -> Any:
    s = DuckDBStore(tmp_path / "b.duckdb", durability=request.param)
    await s.open()
    yield s
    await s.close()


async def test_one_group_of_many_units(store: DuckDBStore) -> None:
    sessions = [await create_session(store, agent_id=f"a{i}", tags=("t",)) for i in range(4)]
    old = [await create_run(store, _run(sessions[i % 4].id, 100 + i)) for i in range(12)]
    async with Gate(store) as gate:
        assert store._writer is not None
        counting = store._writer.conn = _Counting(store._writer.conn)  # type: ignore[assignment]
        new = [_run(sessions[i % 4].id, i) for i in range(30)]
        creates = [asyncio.create_task(store.commit(WriteUnit(r.session_id, new_runs=[r]))) for r in new]
        finishes = [
            asyncio.create_task(store.commit(WriteUnit(r.session_id, runs=[RunWrite(_done(r, i))])))
            for i, r in enumerate(new)
        ]
        # Runs stored by an earlier group, written twice here: the second write wins.
        firsts = [
            asyncio.create_task(store.commit(WriteUnit(r.session_id, runs=[RunWrite(r.transition(RunStatus.RUNNING))])))
            for r in old
        ]
        seconds = [
            asyncio.create_task(store.commit(WriteUnit(r.session_id, runs=[RunWrite(_done(r, 100 + i))])))
            for i, r in enumerate(old)
        ]
        # Units whose condition fails, each alone.
        missing_run = asyncio.create_task(
            store.commit(WriteUnit(sessions[0].id, runs=[RunWrite(Run(session_id=sessions[0].id, id="run_missing"))]))
        )
        twice = asyncio.create_task(store.commit(WriteUnit(sessions[0].id, new_runs=[_run(sessions[0].id, 0)])))
        orphan = asyncio.create_task(
            store.commit(WriteUnit("nope", new_runs=[Run(session_id="nope", id="run_orphan")]))
        )
        stale = asyncio.create_task(
            store.commit(
                WriteUnit(
                    old[0].session_id,
                    [Event(session_id=old[0].session_id, type="run_cancelled", run_id=old[0].id)],
                    runs=[RunWrite(old[0].transition(RunStatus.CANCELLED), expect_status=RunStatus.PENDING)],
                )
            )
        )
        fresh = Session(agent_id="fresh")
        fresh_create = asyncio.create_task(store.commit(WriteUnit(fresh.id, new_session=fresh)))
        fresh_update = asyncio.create_task(
            store.commit(WriteUnit(fresh.id, session=fresh.transition(SessionStatus.ACTIVE)))
        )
        appends = [asyncio.create_task(store.append(s.id, [Event(session_id=s.id, type="note")])) for s in sessions]
        queued = len(new) * 2 + len(old) * 2 + 4 + 2 + len(appends)
        commits = store.stats.commits
        await gate.open_when_queued(queued)

    await asyncio.gather(*creates, *finishes, *firsts, *seconds, *appends, fresh_create, fresh_update)
    with pytest.raises(RunNotFoundError, match="run_missing"):
        await missing_run
    with pytest.raises(AlreadyExistsError):
        await twice
    with pytest.raises(SessionNotFoundError):
        await orphan
    with pytest.raises(WriteConflictError):
        await stale  # old[0] became running earlier in the same group
    assert store.stats.commits - commits == 2  # the gate's group, then everything else at once
    # The gate's group is one statement (autocommit); then the whole group in one transaction.
    group = counting.statements[counting.statements.index("BEGIN") :]
    assert group.count("BEGIN") == group.count("COMMIT") == 1 and group[-1] == "COMMIT", group
    assert len(group) <= 8, group
    assert group.count("UPDATE runs") == group.count("INSERT runs") == 1, group

    async def check(s: DuckDBStore) -> None:
        for i, r in enumerate(new):
            assert await s.get_run(r.id) == _done(r, i)
        for i, r in enumerate(old):
            assert await s.get_run(r.id) == _done(r, 100 + i)
        assert (await s.get_session(fresh.id)).status is SessionStatus.ACTIVE
        with pytest.raises(RunNotFoundError):
            await s.get_run("run_orphan")
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
    path = tmp_path / "old.duckdb"
    first = DuckDBStore(path)
    await first.open()
    s = await create_session(first)
    run = await create_run(first, _run(s.id, 1))
    await first.close()

    store = DuckDBStore(path)
    await store.open()
    try:
        async with Gate(store) as gate:
            dup_session = asyncio.create_task(store.commit(WriteUnit(s.id, new_session=s)))
            dup_run = asyncio.create_task(store.commit(WriteUnit(s.id, new_runs=[run])))
            update = asyncio.create_task(store.commit(WriteUnit(s.id, runs=[RunWrite(_done(run, 1))])))
            other = asyncio.create_task(store.commit(WriteUnit(s.id, new_runs=[_run(s.id, 2)])))
            note = asyncio.create_task(store.append(s.id, [Event(session_id=s.id, type="note")]))
            await gate.open_when_queued(5)
        with pytest.raises(AlreadyExistsError):
            await dup_session
        with pytest.raises(AlreadyExistsError):
            await dup_run
        assert (await update).run(run.id) == _done(run, 1)
        assert (await other).runs[0].id == "run_002"
        assert [e.seq for e in await note] == [1]
        assert await store.get_run(run.id) == _done(run, 1)
        assert await store.get_session(s.id) == s
    finally:
        await store.close()


async def test_reads_from_the_tail_equal_reads_from_duckdb(store: DuckDBStore) -> None:
    s = await create_session(store)
    types = ["note", EventType.MESSAGE_STREAMED, "other"]
    for i in range(60):
        batch = [
            Event(session_id=s.id, type=types[(i + k) % 3], payload={"i": i, "k": k, "t": (1, 2)}, run_id=f"r{i % 2}")
            for k in (0, 1)
        ]
        await store.append(s.id, batch)
    queries: list[dict[str, Any]] = [
        {}, {"after": 100}, {"after": 119}, {"after": 120}, {"after": 5, "before": 9}, {"after": 3, "limit": 4},
        {"types": ["note"]}, {"after": 50, "types": ["other", "note"], "limit": 7}, {"limit": 0}, {"before": 1},
        {"run_id": "r1", "after": 10, "limit": 5},
    ]  # fmt: skip
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
    from_db, last_db = [], []
    for q in queries:
        store.tail.clear()  # a full read from DuckDB fills the tail again
        from_db.append(await store.read(s.id, **q))
    for n in (0, 1, 5, 120, 500):
        store.tail.clear()
        last_db.append(await store.last(s.id, n))
    assert reader_calls == len(queries) + 5
    assert from_tail == from_db
    assert last_tail == last_db
    assert from_tail[0][0].payload == {"i": 0, "k": 0, "t": [1, 2]}  # as stored (JSON), like a DuckDB read
    assert [e.seq for e in from_tail[0]] == list(range(1, 121))
    assert {type(e.type) for e in from_tail[0]} == {type(e.type) for e in from_db[0]} == {str}


async def test_a_full_read_fills_the_tail(store: DuckDBStore) -> None:
    s = await create_session(store)
    await store.append(s.id, [Event(session_id=s.id, type="note", payload={"i": i}) for i in range(10)])
    store.tail.clear()
    reads = 0
    real_read = store._read

    async def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return await real_read(*args)

    store._read = counted  # type: ignore[method-assign]
    first = await store.read(s.id)
    assert await store.read(s.id) == first and reads == 1  # the second came from memory


async def test_a_small_tail_falls_back_to_duckdb(store: DuckDBStore) -> None:
    store.tail = Tail(max_bytes=8 * 4 * 400)
    assert store._writer is not None
    store._writer.tail = store._writer.planner.tail = store.tail
    a = await create_session(store)
    b = await create_session(store)
    for i in range(10):
        await store.append(a.id, [Event(session_id=a.id, type="note", payload={"i": i})])
    await store.append(b.id, [Event(session_id=b.id, type="note", payload={"i": i}) for i in range(3)])
    assert [e.seq for e in await store.read(a.id)] == list(range(1, 11))
    assert [e.seq for e in await store.read(a.id, after=7)] == [8, 9, 10]
    assert [e.seq for e in await store.last(a.id, 8)] == list(range(3, 11))
    assert [e.payload["i"] for e in await store.read(b.id)] == [0, 1, 2]
    for i in range(3, 60):  # b's rows push a out of the byte budget
        await store.append(b.id, [Event(session_id=b.id, type="note", payload={"i": i})])
    assert [e.seq for e in await store.read(a.id, after=8)] == [9, 10]
    assert [e.seq for e in await store.last(b.id, 2)] == [59, 60]
    assert store.tail.bytes <= store.tail.max_bytes
    with pytest.raises(SessionNotFoundError):
        await store.read("missing")


_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), max_size=2),
        "cost": st.none() | st.sampled_from([0.0, 0.25, 1.5]),
        "provider": st.none() | st.sampled_from(["p", "q"]),
        "model": st.none() | st.sampled_from(["m", "n"]),
        "stop_reason": st.none() | st.sampled_from(["end_turn", "max_tokens"]),
        "usage": st.builds(Usage, st.integers(0, 9), st.integers(0, 9)),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(_CHANGES, min_size=1, max_size=3), min_size=1, max_size=4))
def test_updates_that_set_only_changed_columns_store_the_last_write(tmp_path: Path, rounds: Any) -> None:
    """An update sets only the columns that differ from what the file holds; whatever changes
    (a column back to NULL, the same value again, several writes of one run in a group), the
    file ends up holding the last write - read back after a reopen, not from the cache."""
    path = tmp_path / f"u{uuid.uuid4().hex}.duckdb"

    async def go() -> None:
        store = DuckDBStore(path)
        await store.open()
        s = await create_session(store)
        run = await create_run(store, _run(s.id, 1))
        try:
            for changes in rounds:
                versions = [attrs.evolve(run, **c) for c in changes]
                await asyncio.gather(*(store.commit(WriteUnit(s.id, runs=[RunWrite(v)])) for v in versions))
                run = versions[-1]
                assert await store.get_run(run.id) == run
        finally:
            await store.close()
        again = DuckDBStore(path)
        await again.open()
        try:
            assert await again.get_run(run.id) == run
        finally:
            await again.close()

    asyncio.run(go())


async def test_a_run_outcome_updates_only_what_changed(store: DuckDBStore) -> None:
    s = await create_session(store)
    started = T0 + timedelta(seconds=1, milliseconds=1)  # as _done starts it
    run = await create_run(store, _run(s.id, 1).transition(RunStatus.RUNNING, started_at=started))
    assert store._writer is not None
    seen: list[str] = []

    class Spy(_Counting):
        def execute(self, sql: str, *args: Any) -> Any:
            seen.append(sql)
            return super().execute(sql, *args)

    store._writer.conn = Spy(store._writer.conn)  # type: ignore[assignment]
    done = _done(_run(s.id, 1), 1)
    await store.commit(WriteUnit(s.id, runs=[RunWrite(done)]))
    (update,) = [q for q in seen if q.startswith("UPDATE runs")]
    sets = update.split(" SET ", 1)[1].split(" WHERE ")[0]
    assert "status" in sets and "output" in sets and "finished_at" in sets
    assert "input" not in sets and "metadata" not in sets and "started_at" not in sets, sets
    assert await store.get_run(run.id) == done
    seen.clear()
    await store.commit(WriteUnit(s.id, runs=[RunWrite(done)]))  # nothing differs: no statement
    assert not [q for q in seen if q.startswith("UPDATE")]
