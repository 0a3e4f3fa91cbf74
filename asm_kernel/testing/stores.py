"""The store conformance suite: every store runs these tests unchanged.

Subclass :class:`StoreConformance` in your test module and provide a ``make_store`` fixture
returning a zero-argument callable that builds a *new, unopened* store. For a durable store set
``durable = True``: calling the factory again must open the same data (the suite closes the
first store and reopens). Tests are plain synchronous pytest tests (each runs its own event
loop), so no async pytest plugin is needed::

    class TestMyStore(StoreConformance):
        durable = True

        @pytest.fixture
        def make_store(self, tmp_path):
            return lambda: MyStore(tmp_path / "db")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from ..errors import (
    AlreadyExistsError,
    PayloadTooLargeError,
    RunNotFoundError,
    SeqConflictError,
    SessionNotFoundError,
    ValidationError,
)
from ..model import Event, Message, Run, RunStatus, Session, SessionStatus, TextBlock, ToolUseBlock, Usage
from ..storage import MAX_PAYLOAD_BYTES

__all__ = ["StoreConformance", "run_async"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _events(session_id: str, n: int, type_: str = "note", run_id: str | None = None) -> list[Event]:
    return [Event(session_id=session_id, type=type_, payload={"i": i}, run_id=run_id) for i in range(n)]


class StoreConformance:
    """Contract tests for :class:`asm_kernel.interfaces.Store` implementations."""

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
        return await store.create_session(Session(**kwargs))

    # -- sessions and runs ------------------------------------------------------------------

    def test_session_crud(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = Session(agent_id="a1", metadata={"user": "u1", "n": 1}, tags=("x", "y"))
            assert await store.create_session(s) == s
            got = await store.get_session(s.id)
            assert got == s
            assert got.created_at.tzinfo is not None
            with pytest.raises(AlreadyExistsError):
                await store.create_session(s)
            active = s.transition(SessionStatus.ACTIVE)
            await store.update_session(active)
            assert (await store.get_session(s.id)).status is SessionStatus.ACTIVE
            with pytest.raises(SessionNotFoundError):
                await store.get_session("missing")
            with pytest.raises(SessionNotFoundError):
                await store.update_session(Session(id="missing"))

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
                made.append(await store.create_session(s))
            everything = await store.list_sessions(limit=100)
            assert [s.id for s in everything] == [s.id for s in reversed(made)]  # newest first
            assert {s.id for s in await store.list_sessions(agent_id="odd")} == {made[i].id for i in (1, 3, 5)}
            assert {s.id for s in await store.list_sessions(status=SessionStatus.ACTIVE)} == {made[0].id, made[1].id}
            assert {s.id for s in await store.list_sessions(tag="t0")} == {made[0].id, made[3].id, made[6].id}
            pages = [await store.list_sessions(limit=3, offset=o) for o in (0, 3, 6)]
            assert [len(p) for p in pages] == [3, 3, 1]
            assert [s.id for p in pages for s in p] == [s.id for s in everything]
            with pytest.raises(ValidationError):
                await store.list_sessions(limit=-1)

        self._with_store(make_store, body)

    def test_run_crud_and_listing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            other = await self._session(store)
            run = Run(session_id=s.id, input=Message.user("hi"), idempotency_key="k1", metadata={"m": 1})
            assert await store.create_run(run) == run
            assert await store.get_run(run.id) == run
            done = run.transition(RunStatus.RUNNING).transition(
                RunStatus.COMPLETED,
                output=Message("assistant", (TextBlock("hello"), ToolUseBlock("t1", "calc", {"x": 1}))),
                usage=Usage(3, 4, 5, 6, 7),
                cost=0.25,
                provider="p",
                model="m",
                stop_reason="end_turn",
            )
            await store.update_run(done)
            assert await store.get_run(run.id) == done
            r2 = await store.create_run(Run(session_id=s.id))
            await store.create_run(Run(session_id=other.id))
            assert [r.id for r in await store.list_runs(session_id=s.id)] == [run.id, r2.id]
            assert [r.id for r in await store.list_runs(session_id=s.id, status=RunStatus.PENDING)] == [r2.id]
            assert len(await store.list_runs(session_id=s.id, limit=1)) == 1
            assert (await store.find_run_by_idempotency_key(s.id, "k1")) == done
            assert await store.find_run_by_idempotency_key(other.id, "k1") is None
            with pytest.raises(AlreadyExistsError):
                await store.create_run(run)
            with pytest.raises(RunNotFoundError):
                await store.get_run("missing")
            with pytest.raises(RunNotFoundError):
                await store.update_run(Run(session_id=s.id, id="missing"))
            with pytest.raises(SessionNotFoundError):
                await store.create_run(Run(session_id="missing"))

        self._with_store(make_store, body)

    # -- the event log ----------------------------------------------------------------------

    def test_append_assigns_gapless_seq_from_one(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            other = await self._session(store)
            first = await store.append(s.id, _events(s.id, 3))
            assert [e.seq for e in first] == [1, 2, 3]
            assert [e.seq for e in await store.append(other.id, _events(other.id, 2))] == [1, 2]
            second = await store.append(s.id, _events(s.id, 2))
            assert [e.seq for e in second] == [4, 5]
            assert await store.last_seq(s.id) == 5
            stored = await store.read(s.id)
            assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
            assert [e.payload for e in stored] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 0}, {"i": 1}]
            assert stored[0].id == first[0].id and stored[0].type == "note"

        self._with_store(make_store, body)

    def test_event_fields_round_trip(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            ts = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
            payload = {"text": 'héllo ✓ "quoted" \n', "nested": {"a": [1, 2.5, None, True]}, "empty": {}}
            e = Event(
                session_id=s.id,
                type="message_streamed",
                payload=payload,
                run_id="run_x",
                timestamp=ts,
                schema_version=3,
            )
            (stored,) = await store.append(s.id, [e])
            (read,) = await store.read(s.id)
            for got in (stored, read):
                assert (got.id, got.session_id, got.run_id, got.type, got.payload, got.schema_version) == (
                    e.id,
                    s.id,
                    "run_x",
                    "message_streamed",
                    payload,
                    3,
                )
                assert got.timestamp == ts
                assert got.seq == 1

        self._with_store(make_store, body)

    def test_append_to_unknown_session_is_refused(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            with pytest.raises(SessionNotFoundError):
                await store.append("missing", _events("missing", 1))

        self._with_store(make_store, body)

    def test_bad_batch_stores_nothing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            await store.append(s.id, _events(s.id, 1))
            bad = [*_events(s.id, 2), Event(session_id=s.id, type="x", payload={"bad": object()})]
            with pytest.raises(ValidationError):
                await store.append(s.id, bad)
            huge = [*_events(s.id, 1), Event(session_id=s.id, type="x", payload={"b": "x" * (MAX_PAYLOAD_BYTES + 1)})]
            with pytest.raises(PayloadTooLargeError):
                await store.append(s.id, huge)
            wrong = [Event(session_id="other", type="x")]
            with pytest.raises(ValidationError):
                await store.append(s.id, wrong)
            assert await store.last_seq(s.id) == 1
            assert len(await store.read(s.id)) == 1

        self._with_store(make_store, body)

    def test_append_is_idempotent_by_event_id(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            batch = _events(s.id, 3)
            first = await store.append(s.id, batch)
            await store.append(s.id, _events(s.id, 1))
            again = await store.append(s.id, batch)
            assert [e.seq for e in again] == [e.seq for e in first] == [1, 2, 3]
            assert [e.id for e in again] == [e.id for e in batch]
            assert await store.last_seq(s.id) == 4
            # A retry whose expected_seq is stale still returns the original, not a conflict.
            assert [e.seq for e in await store.append(s.id, batch[:1], expected_seq=0)] == [1]

        self._with_store(make_store, body)

    def test_expected_seq_conflict_stores_nothing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            assert [e.seq for e in await store.append(s.id, _events(s.id, 2), expected_seq=0)] == [1, 2]
            with pytest.raises(SeqConflictError) as info:
                await store.append(s.id, _events(s.id, 2), expected_seq=1)
            assert info.value.retryable
            assert await store.last_seq(s.id) == 2
            assert [e.seq for e in await store.append(s.id, _events(s.id, 1), expected_seq=2)] == [3]
            for bad in (-1, "3", True):
                with pytest.raises(ValidationError):
                    await store.append(s.id, _events(s.id, 1), expected_seq=bad)
            assert await store.last_seq(s.id) == 3

        self._with_store(make_store, body)

    def test_read_filters_and_last(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            for i in range(10):
                await store.append(
                    s.id, [Event(session_id=s.id, type="even" if i % 2 == 0 else "odd", payload={"i": i})]
                )
            assert [e.seq for e in await store.read(s.id, after=7)] == [8, 9, 10]
            assert [e.seq for e in await store.read(s.id, before=4)] == [1, 2, 3]
            assert [e.seq for e in await store.read(s.id, after=2, before=6)] == [3, 4, 5]
            assert [e.seq for e in await store.read(s.id, after=2, limit=2)] == [3, 4]
            assert [e.seq for e in await store.read(s.id, types=["odd"])] == [2, 4, 6, 8, 10]
            assert [e.seq for e in await store.read(s.id, types=["odd"], after=4, limit=2)] == [6, 8]
            assert await store.read(s.id, after=10) == []
            assert [e.seq for e in await store.last(s.id, 3)] == [8, 9, 10]
            assert [e.seq for e in await store.last(s.id, 50)] == list(range(1, 11))
            assert await store.last(s.id, 0) == []
            with pytest.raises(ValidationError):
                await store.read(s.id, after=-1)
            with pytest.raises(SessionNotFoundError):
                await store.read("missing")
            with pytest.raises(SessionNotFoundError):
                await store.last("missing", 3)
            with pytest.raises(SessionNotFoundError):
                await store.last_seq("missing")

        self._with_store(make_store, body)

    def test_concurrent_tasks_yield_a_gapless_log(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            sessions = [await self._session(store) for _ in range(5)]

            async def writer(s: Session, w: int) -> list[int]:
                seqs: list[int] = []
                for i in range(20):
                    batch = [
                        Event(session_id=s.id, type="n", payload={"w": w, "i": i, "j": j}) for j in range(1 + i % 3)
                    ]
                    seqs.extend(e.seq for e in await store.append(s.id, batch))
                return seqs

            results = await asyncio.gather(*(writer(s, w) for s in sessions for w in range(8)))
            for idx, s in enumerate(sessions):
                log = await store.read(s.id)
                assert [e.seq for e in log] == list(range(1, len(log) + 1))
                assert len(log) == 8 * sum(1 + i % 3 for i in range(20))
                returned = sorted(seq for r in results[idx * 8 : (idx + 1) * 8] for seq in r)
                assert returned == [e.seq for e in log]

        self._with_store(make_store, body)

    def test_concurrent_threads_yield_a_gapless_log(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            errors: list[BaseException] = []

            def thread_main(t: int) -> None:
                async def go() -> None:
                    for i in range(25):
                        await store.append(s.id, [Event(session_id=s.id, type="n", payload={"t": t, "i": i})])

                try:
                    asyncio.run(go())
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=thread_main, args=(t,)) for t in range(4)]

            def start_and_join() -> None:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()

            await asyncio.to_thread(start_and_join)
            assert not errors, errors
            log = await store.read(s.id)
            assert [e.seq for e in log] == list(range(1, 101))
            assert sorted((e.payload["t"], e.payload["i"]) for e in log) == [
                (t, i) for t in range(4) for i in range(25)
            ]

        self._with_store(make_store, body)

    def test_wait_returns_new_events_or_times_out(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            await store.append(s.id, _events(s.id, 2))
            assert [e.seq for e in await store.wait(s.id, after=1, timeout=5)] == [2]
            assert await store.wait(s.id, after=2, timeout=0.05) == []

            waiter = asyncio.create_task(store.wait(s.id, after=2, timeout=10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await store.append(s.id, _events(s.id, 1))
            got = await asyncio.wait_for(waiter, 10)
            assert [e.seq for e in got] == [3]

        self._with_store(make_store, body)

    def test_durable_data_survives_reopen(self, make_store: Callable[[], Any]) -> None:
        if not self.durable:
            pytest.skip("this store keeps nothing across instances (durable = False)")

        async def body() -> None:
            store = make_store()
            await store.open()
            s = await store.create_session(Session(agent_id="keep"))
            run = await store.create_run(Run(session_id=s.id, input=Message.user("x")))
            await store.append(s.id, _events(s.id, 5))
            await store.close()
            again = make_store()
            await again.open()
            try:
                assert (await again.get_session(s.id)).agent_id == "keep"
                assert (await again.get_run(run.id)).input == Message.user("x")
                assert [e.seq for e in await again.read(s.id)] == [1, 2, 3, 4, 5]
                assert [e.seq for e in await again.append(s.id, _events(s.id, 1))] == [6]
            finally:
                await again.close()

        run_async(body())
