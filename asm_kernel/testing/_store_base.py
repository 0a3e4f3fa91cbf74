"""Shared plumbing of the store conformance suite (see :mod:`asm_kernel.testing.stores`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from ..model import Event, Run, Session
from ..writes import RunWrite, WriteUnit

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a synchronous test (each test gets its own event loop)."""
    return asyncio.run(coro)


def events_for(session_id: str, n: int, type_: str = "note", run_id: str | None = None) -> list[Event]:
    return [Event(session_id=session_id, type=type_, payload={"i": i}, run_id=run_id) for i in range(n)]


async def create_session(store: Any, session: Session | None = None, **kwargs: Any) -> Session:
    """Store a new session through a unit (the only way records are written)."""
    session = session or Session(**kwargs)
    committed = await store.commit(WriteUnit(session.id, new_session=session))
    assert committed.session is not None
    return committed.session


async def create_run(store: Any, run: Run) -> Run:
    committed = await store.commit(WriteUnit(run.session_id, new_runs=[run]))
    return committed.run(run.id)


async def replace_run(store: Any, run: Run, **conditions: Any) -> Run:
    committed = await store.commit(WriteUnit(run.session_id, runs=[RunWrite(run, **conditions)]))
    return committed.run(run.id)


async def replace_session(store: Any, session: Session) -> Session:
    committed = await store.commit(WriteUnit(session.id, session=session))
    assert committed.session is not None
    return committed.session


class StoreTestBase:
    """Fixture and helpers every part of the suite uses."""

    durable: bool = False

    @pytest.fixture
    def make_store(self) -> Callable[[], Any]:  # pragma: no cover - must be overridden
        raise NotImplementedError("define a make_store fixture in your subclass")

    def _with_store(self, make_store: Callable[[], Any], body: Callable[[Any], Awaitable[T]]) -> T:
        async def main() -> T:
            store = make_store()
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return run_async(main())

    @staticmethod
    async def _session(store: Any, **kwargs: Any) -> Session:
        return await create_session(store, **kwargs)

    @staticmethod
    def seqs(events: Sequence[Event]) -> list[int]:
        return [e.seq for e in events]
