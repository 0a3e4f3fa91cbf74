"""Conformance: session and run records, written through units."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..errors import AlreadyExistsError, RunNotFoundError, SessionNotFoundError, ValidationError
from ..model import Message, Run, RunStatus, Session, SessionStatus, TextBlock, ToolUseBlock, Usage
from ..writes import StoreCapabilities, WriteUnit
from ._store_base import StoreTestBase, create_run, replace_run, replace_session


class StoreRecordTests(StoreTestBase):
    def test_declares_its_capabilities(self, make_store: Callable[[], Any]) -> None:
        store = make_store()
        caps = store.capabilities
        assert isinstance(caps, StoreCapabilities)
        assert caps.leases, "every asm store must enforce run leases"
        assert caps.durable == self.durable
        if caps.durable:
            assert caps.durability in caps.durability_modes

    def test_session_crud(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = Session(agent_id="a1", metadata={"user": "u1", "n": 1}, tags=("x", "y"))
            assert s.created_at == s.updated_at
            assert (await store.commit(WriteUnit(s.id, new_session=s))).session == s
            got = await store.get_session(s.id)
            assert got == s
            assert got.created_at.tzinfo is not None
            with pytest.raises(AlreadyExistsError):
                await store.commit(WriteUnit(s.id, new_session=s))
            active = s.transition(SessionStatus.ACTIVE)
            await replace_session(store, active)
            assert (await store.get_session(s.id)).status is SessionStatus.ACTIVE
            with pytest.raises(SessionNotFoundError):
                await store.get_session("missing")
            with pytest.raises(SessionNotFoundError):
                await replace_session(store, Session(id="missing"))

        self._with_store(make_store, body)

    def test_list_sessions_filters_and_pages(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            base = datetime(2026, 1, 1, tzinfo=UTC)
            made = []
            for i in range(7):
                s = Session(
                    agent_id="even" if i % 2 == 0 else "odd",
                    tags=(f"t{i % 3}",),
                    created_at=base + timedelta(seconds=i),
                )
                if i < 2:
                    s = s.transition(SessionStatus.ACTIVE)
                made.append(await _new(store, s))
            everything = await store.list_sessions(limit=100)
            assert [s.id for s in everything] == [s.id for s in reversed(made)]  # newest first
            assert {s.id for s in await store.list_sessions(agent_id="odd")} == {made[i].id for i in (1, 3, 5)}
            assert {s.id for s in await store.list_sessions(status=SessionStatus.ACTIVE)} == {made[0].id, made[1].id}
            assert {s.id for s in await store.list_sessions(tag="t0")} == {made[0].id, made[3].id, made[6].id}
            pages = [await store.list_sessions(limit=3, offset=o) for o in (0, 3, 6)]
            assert [len(p) for p in pages] == [3, 3, 1]
            assert [s.id for p in pages for s in p] == [s.id for s in everything]
            for bad in ({"limit": -1}, {"offset": -1}, {"limit": True}, {"limit": "3"}):
                with pytest.raises(ValidationError):
                    await store.list_sessions(**bad)

        self._with_store(make_store, body)

    def test_run_crud_and_listing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            other = await self._session(store)
            run = Run(session_id=s.id, input=Message.user("hi"), idempotency_key="k1", metadata={"m": 1})
            assert await create_run(store, run) == run
            assert await store.get_run(run.id) == run
            done = run.transition(RunStatus.RUNNING, owner="w1", lease_token=1).transition(
                RunStatus.COMPLETED,
                output=Message("assistant", (TextBlock("hello"), ToolUseBlock("t1", "calc", {"x": 1}))),
                usage=Usage(3, 4, 5, 6, 7),
                cost=0.25,
                provider="p",
                model="m",
                stop_reason="end_turn",
            )
            await replace_run(store, done)
            assert await store.get_run(run.id) == done
            r2 = await create_run(store, Run(session_id=s.id))
            await create_run(store, Run(session_id=other.id))
            assert [r.id for r in await store.list_runs(session_id=s.id)] == [run.id, r2.id]
            assert [r.id for r in await store.list_runs(session_id=s.id, status=RunStatus.PENDING)] == [r2.id]
            assert len(await store.list_runs(session_id=s.id, limit=1)) == 1
            assert (await store.find_run_by_idempotency_key(s.id, "k1")) == done
            assert await store.find_run_by_idempotency_key(other.id, "k1") is None
            with pytest.raises(AlreadyExistsError):
                await create_run(store, run)
            with pytest.raises(RunNotFoundError):
                await store.get_run("missing")
            with pytest.raises(RunNotFoundError):
                await replace_run(store, Run(session_id=s.id, id="missing"))
            with pytest.raises(SessionNotFoundError):
                await create_run(store, Run(session_id="missing"))

        self._with_store(make_store, body)

    def test_records_that_cannot_be_stored_are_refused_whole(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            bad_sessions = [
                Session(metadata={"x": float("nan")}),
                Session(metadata={"x": "\ud800"}),
                Session(agent_id="\udfff"),
                Session(tags=("ok", "\ud800")),
            ]
            for bad in bad_sessions:
                with pytest.raises(ValidationError):
                    await store.commit(WriteUnit(bad.id, new_session=bad))
                with pytest.raises(SessionNotFoundError):
                    await store.get_session(bad.id)
            bad_runs = [
                Run(session_id=s.id, metadata={"deep": _nested(1000)}),
                Run(session_id=s.id, metadata={"inf": float("inf")}),
                Run(session_id=s.id, idempotency_key="\ud800"),
            ]
            for run in bad_runs:
                with pytest.raises(ValidationError):
                    await create_run(store, run)
            assert await store.list_runs(session_id=s.id) == []

        self._with_store(make_store, body)


async def _new(store: Any, session: Session) -> Session:
    committed = await store.commit(WriteUnit(session.id, new_session=session))
    assert committed.session is not None
    return committed.session


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"d": value}
    return value
