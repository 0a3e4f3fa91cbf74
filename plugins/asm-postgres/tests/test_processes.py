"""Several processes on one schema: seqs, idempotency, expected_seq, claims, fencing, notifications.

Each test starts real worker processes (``pg_worker.py``), lets them all go at once, and checks
what the database holds against what each process was told. Nothing here times anything: the
processes are only told when to start.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asm_kernel.model import Event, Run, RunStatus, Session, utcnow
from asm_kernel.writes import RunWrite, WriteUnit
from pg_helpers import DSN, sql, sql_holding, store_for

from asm_postgres.store import PostgresStore

WORKER = str(Path(__file__).with_name("pg_worker.py"))


class Proc:
    """A worker process speaking lines: ``ready``, then one JSON line per phase."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, schema: str, mode: str, **args: Any) -> Proc:
        payload = json.dumps({"mode": mode, "schema": schema, "dsn": DSN, **args})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, WORKER, payload, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        worker = cls(proc)
        assert await worker.read() == "ready"
        return worker

    async def read(self) -> Any:
        assert self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode().strip()
        if not line:
            await self.proc.wait()
            raise AssertionError(f"worker exited with {self.proc.returncode} before answering")
        return line if line == "ready" else json.loads(line)

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def finish(self) -> Any:
        result = await self.read()
        assert await self.proc.wait() == 0
        return result


async def _all(workers: list[Proc]) -> list[Any]:
    for w in workers:
        w.send()
    return list(await asyncio.gather(*(w.finish() for w in workers)))


async def _opened(schema: str, **settings: Any) -> PostgresStore:
    store = store_for(schema, **settings)
    await store.open()
    return store


async def _sessions(store: PostgresStore, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        s = Session()
        await store.commit(WriteUnit(s.id, new_session=s))
        ids.append(s.id)
    return ids


async def test_appenders_in_several_processes_get_a_gapless_log_per_session(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        sessions = await _sessions(store, 3)
        workers = [await Proc.start(pg_schema, "append", sessions=sessions, rounds=25, worker=w) for w in range(4)]
        results = await _all(workers)
        for sid in sessions:
            log = await store.read(sid)
            assert [e.seq for e in log] == list(range(1, len(log) + 1))
            assert len(log) == sum(1 + (i + w) % 3 for w in range(4) for i in range(25))
            told = sorted(seq for r in results for seq in r[sid])
            assert told == [e.seq for e in log]  # every seq a process was told is its own event's
            # Each process's events are in the order it appended them.
            for w in range(4):
                mine = [(e.payload["i"], e.payload["j"]) for e in log if e.payload["w"] == w]
                assert mine == sorted(mine)
            assert await store.last_seq(sid) == len(log)
    finally:
        await store.close()


async def test_the_same_events_sent_by_several_processes_are_stored_once(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        await store.append(sid, [Event(session_id=sid, type="before")])
        ids = [f"evt_{uuid.uuid4().hex}" for _ in range(5)]
        workers = [await Proc.start(pg_schema, "replay", session=sid, events=ids) for _ in range(4)]
        results = await _all(workers)
        assert all(r == results[0] for r in results)  # every process got the same seqs back
        assert results[0] == [[e, n] for n, e in enumerate(ids, start=2)]
        assert [e.id for e in await store.read(sid)][1:] == ids
        assert await store.last_seq(sid) == 6
    finally:
        await store.close()


async def test_expected_seq_lets_exactly_one_process_win_each_seq(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        workers = [await Proc.start(pg_schema, "expected", session=sid, successes=15, worker=w) for w in range(3)]
        results = await _all(workers)
        won = sorted(seq for r in results for seq in r["seqs"])
        assert won == list(range(1, 46))
        log = await store.read(sid)
        assert [e.seq for e in log] == won
        for w, r in enumerate(results):
            assert [e.seq for e in log if e.payload["w"] == w] == r["seqs"]
    finally:
        await store.close()


async def _queue(store: PostgresStore, sessions: int, runs: int) -> dict[str, list[str]]:
    """``runs`` pending runs in each of ``sessions`` sessions, created oldest first."""
    base = utcnow() - timedelta(minutes=10)
    made: dict[str, list[str]] = {}
    n = 0
    for sid in await _sessions(store, sessions):
        made[sid] = []
        for _ in range(runs):
            n += 1
            run = Run(session_id=sid, created_at=base + timedelta(milliseconds=n))
            await store.commit(WriteUnit(sid, new_runs=[run]))
            made[sid].append(run.id)
    return made


def _check_log(log: list[Event], order: list[str], max_running: int) -> None:
    """Each run started and completed once, never more than max_running at once, claimed in FIFO order.

    Claims are FIFO, but runs claimed together start in any order: when the j-th run starts, at
    most ``max_running - 1`` older runs are claimed and not started yet, so the i-th start is one
    of the first ``i + max_running`` runs (with one, exactly creation order).
    """
    starts = [e.run_id for e in log if e.type == "run_started"]
    assert sorted(starts) == sorted(order)
    for i, run_id in enumerate(starts):
        assert run_id in order[: i + max_running], f"start {i} ({run_id}) overtook the queue"
    assert sorted(e.run_id for e in log if e.type == "run_completed") == sorted(order)
    live: set[str] = set()
    for e in log:
        if e.type == "run_started":
            live.add(e.run_id)  # type: ignore[arg-type]
            assert len(live) <= max_running, f"{len(live)} runs of one session ran at once"
        elif e.type == "run_completed":
            live.remove(e.run_id)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_running", [1, 2])
async def test_claims_from_several_processes_share_no_run_and_keep_fifo_and_limits(
    pg_schema: str, max_running: int
) -> None:
    store = await _opened(pg_schema)
    try:
        queued = await _queue(store, sessions=5, runs=6)
        workers = [
            await Proc.start(pg_schema, "claim", owner=f"w{i}", limit=2, max_running=max_running) for i in range(3)
        ]
        results = await _all(workers)
        claimed = [run for r in results for run in r]
        assert sorted(claimed) == sorted(run for runs in queued.values() for run in runs)  # each once
        for sid, order in queued.items():
            _check_log(await store.read(sid), order, max_running)
        runs = await store.list_runs(limit=1000)
        assert {r.status for r in runs} == {RunStatus.COMPLETED}
        assert all(r.lease_token == 1 for r in runs)  # no claim was ever taken over
        assert sum(1 for r in results if r) >= 2, "the work was not shared between processes"
    finally:
        await store.close()


async def test_a_worker_whose_lease_was_taken_over_is_fenced_out(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        run = Run(session_id=sid)
        await store.commit(WriteUnit(sid, new_runs=[run]))
        stale = await Proc.start(pg_schema, "hold", ttl=0.5)
        stale.send()
        assert (await stale.read()) == {"token": 1}
        # The stale worker stops renewing; by the database's clock its lease runs out.
        while not await store.list_runs(lease_expired=True):
            await asyncio.sleep(0.05)
        held = await store.get_run(run.id)
        takeover = RunWrite(
            held.transition(RunStatus.FAILED, owner="rescuer", lease_token=held.lease_token + 1, lease_expires_at=None),
            expect_status=RunStatus.RUNNING,
            expect_token=held.lease_token,
            expect_lease_expired=True,
        )
        await store.commit(WriteUnit(sid, [Event(session_id=sid, type="run_failed", run_id=run.id)], runs=[takeover]))
        stale.send("write")
        assert await stale.finish() == {"error": "storage.lease_lost"}
        assert [e.type for e in await store.read(sid)] == ["run_failed"]
    finally:
        await store.close()


async def test_an_append_in_another_process_wakes_a_waiter(pg_schema: str) -> None:
    app = f"asm-t-{uuid.uuid4().hex[:8]}"
    store = await _opened(pg_schema, application_name=app)
    try:
        sids = await _sessions(store, 20)
        waiters = [asyncio.create_task(store.wait(sid, after=0, timeout=60)) for sid in sids]
        while len(store._waiters) < len(sids):
            await asyncio.sleep(0.01)
        # Twenty waiters, one listening connection.
        listening = sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [f"{app}-listen"])
        assert listening == [(1,)]
        event_id = f"evt_{uuid.uuid4().hex}"
        writer = await Proc.start(pg_schema, "append_one", session=sids[7], id=event_id)
        writer.send()
        assert await writer.finish() == [1]
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        assert [t for t in done] == [waiters[7]]
        assert [(e.id, e.seq) for e in waiters[7].result()] == [(event_id, 1)]
        assert store._listener.notifications >= 1 and store._listener.listening
        for t in waiters:
            t.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        await store.close()


async def test_a_waiter_misses_nothing_while_its_listening_connection_is_down(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        waiter = asyncio.create_task(store.wait(sid, after=0, timeout=60))
        while not store._listener.listening or not len(store._waiters):
            await asyncio.sleep(0.01)
        writer = await Proc.start(pg_schema, "append_one", session=sid, id=f"evt_{uuid.uuid4().hex}")
        # Cut the listening connection, then append while it is (probably) still down.
        sql("SELECT pg_terminate_backend(%s)", [store._listener.backend_pid])
        writer.send()
        assert await writer.finish() == [1]
        got = await waiter
        assert [e.seq for e in got] == [1]
        # The listener comes back by itself.
        while not store._listener.listening:
            await asyncio.sleep(0.01)
        assert store._listener.reconnects >= 1
        follow = asyncio.create_task(store.wait(sid, after=1, timeout=60))
        await asyncio.sleep(0)
        other = await Proc.start(pg_schema, "append_one", session=sid, id=f"evt_{uuid.uuid4().hex}")
        other.send()
        assert await other.finish() == [2]
        assert [e.seq for e in await follow] == [2]
    finally:
        await store.close()


async def test_acknowledged_appends_survive_the_writer_being_killed(pg_schema: str) -> None:
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        writer = await Proc.start(pg_schema, "stream", session=sid)
        writer.send()
        acked = [await writer.read() for _ in range(30)]
        writer.proc.kill()  # SIGKILL, mid-stream
        await writer.proc.wait()
        log = {e.id: e.seq for e in await store.read(sid)}
        assert all(log.get(event_id) == seq for event_id, seq in acked)
        assert sorted(log.values()) == list(range(1, len(log) + 1))
    finally:
        await store.close()


async def test_a_writer_killed_inside_its_transaction_leaves_nothing_behind(pg_schema: str) -> None:
    app = f"asm-k-{uuid.uuid4().hex[:8]}"
    store = await _opened(pg_schema)
    try:
        (sid,) = await _sessions(store, 1)
        run = Run(session_id=sid)
        await store.commit(WriteUnit(sid, [Event(session_id=sid, type="note")], new_runs=[run]))
        with sql_holding(pg_schema, run.id) as release:
            writer = await Proc.start(pg_schema, "cancel", session=sid, run=run.id, application_name=app)
            writer.send()
            # Its unit holds the session's row lock and waits for the run's, held here.
            while not sql("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                          [app]):
                await asyncio.sleep(0.02)
            writer.proc.kill()
            await writer.proc.wait()
            release()
        # The server rolls the orphaned transaction back; the session is free again.
        assert [e.type for e in await store.read(sid)] == ["note"]
        assert (await store.get_run(run.id)).status is RunStatus.PENDING
        assert [e.seq for e in await store.append(sid, [Event(session_id=sid, type="after")])] == [2]
    finally:
        await store.close()
