"""DuckDB store specifics: group commit, write-behind, lifecycle, corrupt files, read-only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import duckdb
import pytest
from asm_kernel.errors import (
    AlreadyExistsError,
    SeqConflictError,
    SessionNotFoundError,
    StorageError,
    StoreClosedError,
    StoreCorruptError,
)
from asm_kernel.events import EventType
from asm_kernel.model import Event, Session
from asm_kernel.testing.stores import create_session
from asm_kernel.writes import WriteUnit
from duckdb_helpers import FailingCommits, Gate, until

from asm_duckdb.store import DuckDBStore


def _events(session_id: str, n: int, type_: str = "note") -> list[Event]:
    return [Event(session_id=session_id, type=type_, payload={"i": i}) for i in range(n)]


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = DuckDBStore(tmp_path / "s.duckdb")
    await s.open()
    yield s
    await s.close()


async def test_repr_shows_the_path_only(tmp_path: Path) -> None:
    s = DuckDBStore(tmp_path / "x.duckdb", durability="fast")
    assert repr(s) == f"DuckDBStore({str(tmp_path / 'x.duckdb')!r})"


async def test_capabilities_name_the_mode(tmp_path: Path) -> None:
    for mode in ("safe", "fast"):
        caps = DuckDBStore(tmp_path / "c.duckdb", durability=mode).capabilities
        assert (caps.shared, caps.durable, caps.durability, caps.leases) == (False, True, mode, True)
        assert caps.durability_modes == ("safe", "fast")


async def test_group_commit_shares_commits_between_concurrent_appends(store: DuckDBStore) -> None:
    sessions = [await create_session(store) for _ in range(20)]
    before = store.stats.commits
    units = store.stats.units

    async def writer(s: Session) -> list[int]:
        seqs: list[int] = []
        for _ in range(10):
            seqs.extend(e.seq for e in await store.append(s.id, _events(s.id, 1)))
        return seqs

    results = await asyncio.gather(*(writer(s) for s in sessions))
    commits = store.stats.commits - before
    assert store.stats.units - units == 200
    assert commits < 200, commits
    assert store.stats.largest_group > 1
    for s, seqs in zip(sessions, results, strict=True):
        assert seqs == list(range(1, 11))
        assert [e.seq for e in await store.read(s.id)] == list(range(1, 11))


async def test_a_bad_request_fails_alone_in_its_group(store: DuckDBStore) -> None:
    a = await create_session(store)
    b = await create_session(store)
    await store.append(a.id, _events(a.id, 2))
    gate = Gate(store)
    held = await gate.hold()
    commits = store.stats.commits
    good_a = asyncio.create_task(store.append(a.id, _events(a.id, 1), expected_seq=2))
    conflict = asyncio.create_task(store.append(a.id, _events(a.id, 1), expected_seq=0))
    unknown = asyncio.create_task(store.append("missing", _events("missing", 1)))
    duplicate = asyncio.create_task(store.commit(WriteUnit(b.id, new_session=b)))
    good_b = asyncio.create_task(store.append(b.id, _events(b.id, 3)))
    await gate.open_when_queued(5)
    await held
    assert [e.seq for e in await good_a] == [3]
    assert [e.seq for e in await good_b] == [1, 2, 3]
    with pytest.raises(SeqConflictError):
        await conflict
    with pytest.raises(SessionNotFoundError):
        await unknown
    with pytest.raises(AlreadyExistsError):
        await duplicate
    assert store.stats.commits - commits == 2  # the gate's group, then everything else at once
    assert [e.seq for e in await store.read(a.id)] == [1, 2, 3]
    assert await store.last_seq(b.id) == 3


async def test_retried_ids_in_one_group_are_stored_once(store: DuckDBStore) -> None:
    s = await create_session(store)
    batch = _events(s.id, 3)
    first = await store.append(s.id, batch)
    store.tail.clear()  # the retry is not recognised from memory: the unique index must catch it
    gate = Gate(store)
    held = await gate.hold()
    fresh = _events(s.id, 2)
    retries = [asyncio.create_task(store.append(s.id, batch)) for _ in range(2)]
    twice = [asyncio.create_task(store.append(s.id, fresh)) for _ in range(2)]
    mixed = asyncio.create_task(store.append(s.id, [*batch[:1], *_events(s.id, 1)]))
    await gate.open_when_queued(5)
    await held
    for task in retries:
        assert [e.seq for e in await task] == [e.seq for e in first] == [1, 2, 3]
    assert [e.seq for e in await twice[0]] == [e.seq for e in await twice[1]] == [4, 5]
    assert [e.seq for e in await mixed] == [1, 6]
    assert [e.seq for e in await store.read(s.id)] == [1, 2, 3, 4, 5, 6]
    assert store.stats.retries >= 1


async def test_a_failed_commit_fails_the_group_and_rolls_back_seqs(store: DuckDBStore) -> None:
    s = await create_session(store)
    await store.append(s.id, _events(s.id, 2))
    gate = Gate(store)
    held = await gate.hold()
    faults = FailingCommits(store, lambda n: n == 2)  # the group after the gate's
    tasks = [asyncio.create_task(store.append(s.id, _events(s.id, 1))) for _ in range(3)]
    await gate.open_when_queued(3)
    await held
    for task in tasks:
        with pytest.raises(StorageError, match="No space left"):
            await task
    faults.restore()
    assert await store.last_seq(s.id) == 2
    assert [e.seq for e in await store.append(s.id, _events(s.id, 1))] == [3]
    assert [e.seq for e in await store.read(s.id)] == [1, 2, 3]


async def test_fast_mode_acknowledges_stream_deltas_and_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "fast.duckdb"
    store = DuckDBStore(path, durability="fast")
    await store.open()
    s = await create_session(store)
    seqs = []
    for i in range(50):
        delta = Event(session_id=s.id, type=EventType.MESSAGE_STREAMED, payload={"text": str(i)})
        (e,) = await store.append(s.id, [delta], durable=False)
        seqs.append(e.seq)
    assert seqs == list(range(1, 51))
    assert store.stats.behind_acks > 0  # some (all, unless the machine is slow) before their commit
    assert store.stats.commits < 50
    # Other events are awaited to their commit, and they commit the deltas before them.
    (done,) = await store.append(s.id, [Event(session_id=s.id, type=EventType.MESSAGE_RECEIVED)])
    assert done.seq == 51
    for i in range(30):
        await store.append(
            s.id, [Event(session_id=s.id, type=EventType.THINKING_STREAMED, payload={"i": i})], durable=False
        )
    # A read sees every acknowledged append, written behind or not.
    assert [e.seq for e in await store.read(s.id)] == list(range(1, 82))
    for i in range(25):
        await store.append(
            s.id, [Event(session_id=s.id, type=EventType.MESSAGE_STREAMED, payload={"i": i})], durable=False
        )
    assert await store.last_seq(s.id) == 106
    await store.close()
    again = DuckDBStore(path)
    await again.open()
    try:
        log = await again.read(s.id)
        assert [e.seq for e in log] == list(range(1, 107))
        assert log[0].payload == {"text": "0"}
    finally:
        await again.close()


async def test_safe_mode_never_acknowledges_before_commit(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "safe.duckdb", durability="safe")
    await store.open()
    try:
        s = await create_session(store)
        for _ in range(5):
            await store.append(s.id, _events(s.id, 1, type_=EventType.MESSAGE_STREAMED), durable=False)
        assert store.stats.behind_acks == 0
        assert store._writer is not None and store._writer.owed == 0
    finally:
        await store.close()


async def test_wait_wakes_on_a_write_behind_append(store: DuckDBStore) -> None:
    s = await create_session(store)
    waiter = asyncio.create_task(store.wait(s.id, after=0, timeout=30))
    await asyncio.sleep(0)
    await store.append(s.id, _events(s.id, 1, type_=EventType.MESSAGE_STREAMED), durable=False)
    got = await asyncio.wait_for(waiter, 30)
    assert [e.seq for e in got] == [1]


async def test_closed_store_refuses_every_call(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "c.duckdb")
    with pytest.raises(StoreClosedError):
        await store.get_session("x")  # never opened
    await store.open()
    s = await create_session(store)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.append(s.id, _events(s.id, 1))
    with pytest.raises(StoreClosedError):
        await store.read(s.id)
    with pytest.raises(StoreClosedError):
        await create_session(store)


async def test_close_waits_for_appends_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "inflight.duckdb"
    store = DuckDBStore(path, durability="fast")
    await store.open()
    s = await create_session(store)
    tasks = [
        asyncio.create_task(store.append(s.id, _events(s.id, 1, type_=EventType.MESSAGE_STREAMED), durable=False))
        for _ in range(40)
    ]
    await asyncio.sleep(0)  # every append is queued before close
    await store.close()
    acked = sorted(e.seq for batch in await asyncio.gather(*tasks) for e in batch)
    assert acked == list(range(1, 41))
    again = DuckDBStore(path)
    await again.open()
    try:
        assert [e.seq for e in await again.read(s.id)] == acked
    finally:
        await again.close()


async def test_random_bytes_are_a_corrupt_store(tmp_path: Path) -> None:
    import os

    path = tmp_path / "corrupt.duckdb"
    path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreCorruptError, match=r"corrupt\.duckdb") as info:
        await DuckDBStore(path).open()
    assert "not a valid DuckDB database" in str(info.value)
    assert info.value.code == "storage.corrupt"


async def test_a_foreign_duckdb_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    with pytest.raises(StoreCorruptError, match="not an asm store"):
        await DuckDBStore(path).open()
    # ... and the file is left alone and released.
    con = duckdb.connect(str(path))
    assert con.execute("SELECT count(*) FROM invoices").fetchone() == (0,)
    con.close()


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.duckdb"
    store = DuckDBStore(path)
    await store.open()
    await store.close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE asm_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreCorruptError, match="schema version 99, newer") as info:
        await DuckDBStore(path).open()
    assert "newer.duckdb" in str(info.value)


async def test_read_only_reads_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.duckdb"
    store = DuckDBStore(path)
    await store.open()
    s = await create_session(store, agent_id="ro")
    await store.append(s.id, _events(s.id, 3))
    await store.close()
    ro = DuckDBStore(path, read_only=True)
    await ro.open()
    try:
        assert (await ro.get_session(s.id)).agent_id == "ro"
        assert [e.seq for e in await ro.last(s.id, 2)] == [2, 3]
        assert await ro.last_seq(s.id) == 3
        with pytest.raises(StorageError, match="read_only"):
            await ro.append(s.id, _events(s.id, 1))
    finally:
        await ro.close()
    with pytest.raises(StorageError, match="does not exist"):
        await DuckDBStore(tmp_path / "none.duckdb", read_only=True).open()


async def test_big_batches_and_type_filters(store: DuckDBStore) -> None:
    s = await create_session(store)
    batch = [Event(session_id=s.id, type="a" if i % 3 else "b", payload={"i": i}) for i in range(2500)]
    stored = await store.append(s.id, batch)
    assert [e.seq for e in stored] == list(range(1, 2501))
    assert [e.seq for e in await store.append(s.id, batch)] == list(range(1, 2501))  # idempotent, big
    assert len(await store.read(s.id, types=["b"])) == 834
    assert [e.payload["i"] for e in await store.last(s.id, 3)] == [2497, 2498, 2499]


async def test_appends_from_another_event_loop_thread(store: DuckDBStore) -> None:
    s = await create_session(store)

    def other_loop() -> list[int]:
        async def go() -> list[int]:
            return [e.seq for e in await store.append(s.id, _events(s.id, 2))]

        return asyncio.run(go())

    got = await asyncio.to_thread(other_loop)
    assert got == [1, 2]
    assert [e.seq for e in await store.read(s.id)] == [1, 2]


async def test_memory_reports_duckdb_buffers_and_the_caches(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "mem.duckdb", cache_bytes=2**20, tail_bytes=2**20)
    await store.open()
    try:
        s = await create_session(store)
        await store.append(s.id, [Event(session_id=s.id, type="note", payload={"i": i}) for i in range(50)])
        await store.read(s.id)  # a full read fills the tail
        use = await store.memory()
        assert use.duckdb and all(v > 0 for v in use.duckdb.values())
        assert 0 < use.records <= 2**20 and 0 < use.tail <= 2**20
        assert use.total == sum(use.duckdb.values()) + use.records + use.tail
    finally:
        await store.close()
    with pytest.raises(StoreClosedError):
        await store.memory()


async def test_a_write_cancelled_before_the_writer_takes_it_is_withdrawn(store: DuckDBStore) -> None:
    s = await create_session(store)
    gate = Gate(store)
    held = await gate.hold()  # the writer is busy: the next request waits in the queue
    task = asyncio.create_task(store.append(s.id, _events(s.id, 2)))
    assert store._writer is not None
    await until(lambda: store._writer.queue.qsize() >= 1, "the append is queued")  # type: ignore[union-attr]
    try:
        task.cancel("caller gave up")
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        gate.release.set()
    await held
    assert await store.read(s.id) == []  # withdrawn: nothing was written
    assert [e.seq for e in await store.append(s.id, _events(s.id, 1))] == [1]


async def test_a_write_cancelled_after_the_writer_took_it_returns_its_answer_then_the_cancel(
    store: DuckDBStore,
) -> None:
    s = await create_session(store)
    gate = Gate(store, when=lambda unit: unit.session_id == s.id)  # holds the writer in this append
    answers: list[list[Event]] = []
    steps: list[str] = []

    async def caller() -> None:
        answers.append(await store.append(s.id, _events(s.id, 2)))
        steps.append("returned")
        await asyncio.sleep(0)  # the cancel arrives at the next await
        steps.append("not reached")

    task = asyncio.create_task(caller())
    try:
        await until(gate.entered.is_set, "the writer took the append")
        task.cancel("caller gave up")
        task.cancel("twice")  # a second cancel changes nothing either
        await asyncio.sleep(0.01)
        assert not task.done()  # the cancel waits for the writer's answer
    finally:
        gate.release.set()  # never leave the writer stuck, even when the test fails
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["returned"]
    assert [e.seq for e in answers[0]] == [1, 2]
    assert [e.seq for e in await store.read(s.id)] == [1, 2]  # written, and the caller was told
