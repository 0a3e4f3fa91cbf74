"""Helpers shared by the DuckDB store tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asm_kernel.model import Session

from asm_duckdb.store import DuckDBStore


async def until(predicate: Any, what: str) -> None:
    for _ in range(5000):
        if predicate():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never happened: {what}")


class Gate:
    """Holds the writer inside one group so the requests queued meanwhile form the next group."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self.entered = threading.Event()
        self.release = threading.Event()
        self._orig = store._create_session

        def gated(req: Any) -> Any:
            if req.obj.agent_id == "gate":
                self.entered.set()
                self.release.wait()
            return self._orig(req)

        store._create_session = gated  # type: ignore[method-assign]

    async def hold(self) -> asyncio.Task[Any]:
        task = asyncio.create_task(self.store.create_session(Session(agent_id="gate")))
        await until(self.entered.is_set, "the writer entered the gate")
        return task

    async def __aenter__(self) -> Gate:
        self.held = await self.hold()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()  # never leave the writer stuck, even when the test fails
        await self.held

    async def open_when_queued(self, n: int) -> None:
        await until(lambda: self.store._queue.qsize() >= n, f"{n} requests queued")
        self.release.set()
