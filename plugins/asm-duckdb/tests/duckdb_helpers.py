"""Helpers shared by the DuckDB store tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asm_kernel.model import Session
from asm_kernel.testing.stores import create_session
from asm_kernel.writes import WriteUnit

from asm_duckdb.store import DuckDBStore


async def until(predicate: Any, what: str) -> None:
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


class Gate:
    """Holds the writer inside one group so the requests queued meanwhile form the next group.

    The gate is a unit creating a session with ``agent_id="gate"``, or any unit ``when``
    picks: the writer blocks while planning it (it has taken that request; the store lock is
    held, so the caller-thread fast path queues too).
    """

    def __init__(self, store: DuckDBStore, when: Any = None) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()
        assert store._writer is not None, "open the store first"
        planner = store._writer.planner
        self._orig = planner.plan

        def gate_session(unit: WriteUnit) -> bool:
            return unit.new_session is not None and unit.new_session.agent_id == "gate"

        picks = when or gate_session

        def gated(unit: WriteUnit, *args: Any) -> Any:
            if picks(unit):
                self.entered.set()
                self.release.wait()
            return self._orig(unit, *args)

        planner.plan = gated  # type: ignore[method-assign]

    async def hold(self) -> asyncio.Task[Any]:
        task = asyncio.create_task(create_session(self.store, Session(agent_id="gate")))
        await until(self.entered.is_set, "the writer entered the gate")
        return task

    async def __aenter__(self) -> Gate:
        self.held = await self.hold()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()  # never leave the writer stuck, even when the test fails
        await self.held

    async def open_when_queued(self, n: int) -> None:
        assert self.store._writer is not None
        queue = self.store._writer.queue
        await until(lambda: queue.qsize() >= n, f"{n} requests queued")
        self.release.set()


class FailingCommits:
    """Wraps the writer's DuckDB connection: chosen COMMITs raise an I/O error (a full disk).

    The fault is injected at the DuckDB connection boundary: the transaction is rolled back by
    DuckDB as a failed commit would be, then ``duckdb.IOException`` is raised.
    """

    def __init__(self, store: DuckDBStore, fail: Any) -> None:
        assert store._writer is not None
        self.writer = store._writer
        self.conn = store._writer.conn
        self.fail = fail  # fail(n) -> bool for the n-th commit from now
        self.commits = 0
        self.writer.conn = self  # type: ignore[assignment]

    def execute(self, sql: str, *args: Any) -> Any:
        import duckdb

        # A COMMIT, or a statement run outside a transaction (autocommit: its own commit).
        if sql == "COMMIT" or (not self.writer.in_txn and not sql.startswith("BEGIN")):
            self.commits += 1
            if self.fail(self.commits):
                if sql == "COMMIT":
                    self.conn.execute("ROLLBACK")
                raise duckdb.IOException("IO Error: No space left on device (injected)")
        return self.conn.execute(sql, *args)

    def restore(self) -> None:
        self.writer.conn = self.conn
