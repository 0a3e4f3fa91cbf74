"""Conformance: the append-only, gapless event log."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest

from ..errors import AlreadyExistsError, PayloadTooLargeError, SeqConflictError, SessionNotFoundError, ValidationError
from ..model import Event, Message, Run, Session
from ..storage import MAX_PAYLOAD_BYTES
from ._store_base import StoreTestBase, create_run, events_for, run_async


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def malformed_events(session_id: str) -> list[tuple[str, Event]]:
    """Events no store can keep, each with what is wrong (for the isolation tests)."""
    ok = Event(session_id=session_id, type="note")
    return [
        ("id None", attrs.evolve(ok, id=None)),  # type: ignore[arg-type]
        ("empty id", attrs.evolve(ok, id="")),
        ("schema_version str", attrs.evolve(ok, schema_version="1")),  # type: ignore[arg-type]
        ("schema_version bool", attrs.evolve(ok, schema_version=True)),
        ("schema_version > int32", attrs.evolve(ok, schema_version=2**31)),
        ("schema_version 0", attrs.evolve(ok, schema_version=0)),
        ("surrogate in type", attrs.evolve(ok, type="x\ud800")),
        ("surrogate in id", attrs.evolve(ok, id="evt_\udc00")),
        ("surrogate in run_id", attrs.evolve(ok, run_id="run_\ud83d")),
        ("surrogate in payload", attrs.evolve(ok, payload={"t": "a\ud800b"})),
        ("surrogate in payload key", attrs.evolve(ok, payload={"\udfff": 1})),
        ("1000-deep payload", attrs.evolve(ok, payload={"d": _deep(1000)})),
        ("NaN", attrs.evolve(ok, payload={"x": float("nan")})),
        ("Infinity", attrs.evolve(ok, payload={"x": float("-inf")})),
        ("object", attrs.evolve(ok, payload={"x": object()})),
        ("empty type", attrs.evolve(ok, type="")),
    ]


class StoreLogTests(StoreTestBase):
    def test_append_assigns_gapless_seq_from_one(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            other = await self._session(store)
            first = await store.append(s.id, events_for(s.id, 3))
            assert self.seqs(first) == [1, 2, 3]
            assert self.seqs(await store.append(other.id, events_for(other.id, 2))) == [1, 2]
            second = await store.append(s.id, events_for(s.id, 2))
            assert self.seqs(second) == [4, 5]
            assert await store.last_seq(s.id) == 5
            stored = await store.read(s.id)
            assert self.seqs(stored) == [1, 2, 3, 4, 5]
            assert [e.payload for e in stored] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 0}, {"i": 1}]
            assert stored[0].id == first[0].id and stored[0].type == "note"

        self._with_store(make_store, body)

    def test_event_fields_round_trip(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            ts = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
            payload = {"text": 'héllo ✓ "quoted" \n', "nested": {"a": [1, 2.5, None, True]}, "empty": {}, "🙂": 1e300}
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
                await store.append("missing", events_for("missing", 1))

        self._with_store(make_store, body)

    def test_bad_batch_stores_nothing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            await store.append(s.id, events_for(s.id, 1))
            bad = [*events_for(s.id, 2), Event(session_id=s.id, type="x", payload={"bad": object()})]
            with pytest.raises(ValidationError):
                await store.append(s.id, bad)
            huge = [
                *events_for(s.id, 1),
                Event(session_id=s.id, type="x", payload={"b": "x" * (MAX_PAYLOAD_BYTES + 1)}),
            ]
            with pytest.raises(PayloadTooLargeError):
                await store.append(s.id, huge)
            with pytest.raises(ValidationError):
                await store.append(s.id, [Event(session_id="other", type="x")])
            with pytest.raises(ValidationError):
                await store.append(s.id, "not a list")  # type: ignore[arg-type]
            assert await store.last_seq(s.id) == 1
            assert len(await store.read(s.id)) == 1

        self._with_store(make_store, body)

    def test_a_malformed_event_fails_only_its_own_append(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            sessions = [await self._session(store) for _ in range(3)]
            for what, bad in malformed_events(sessions[0].id):
                # Valid appends of other sessions run at the same time: they must all succeed.
                goods = [store.append(s.id, events_for(s.id, 2)) for s in sessions[1:]]
                results = await asyncio.gather(
                    store.append(sessions[0].id, [*events_for(sessions[0].id, 1), bad]), *goods, return_exceptions=True
                )
                assert isinstance(results[0], ValidationError), (what, results[0])
                assert results[0].path and results[0].path.startswith("events[1]"), (what, results[0].path)
                for r in results[1:]:
                    assert not isinstance(r, BaseException), (what, r)
            assert await store.last_seq(sessions[0].id) == 0
            n = len(malformed_events(sessions[0].id))
            for s in sessions[1:]:
                assert self.seqs(await store.read(s.id)) == list(range(1, 2 * n + 1))

        self._with_store(make_store, body)

    def test_append_is_idempotent_by_event_id(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            other = await self._session(store)
            batch = events_for(s.id, 3)
            first = await store.append(s.id, batch)
            await store.append(s.id, events_for(s.id, 1))
            again = await store.append(s.id, batch)
            assert self.seqs(again) == self.seqs(first) == [1, 2, 3]
            assert [e.id for e in again] == [e.id for e in batch]
            assert await store.last_seq(s.id) == 4
            # A retry whose expected_seq is stale still returns the original, not a conflict.
            assert self.seqs(await store.append(s.id, batch[:1], expected_seq=0)) == [1]
            # The same id in another session is a different event: refused, not returned.
            with pytest.raises(AlreadyExistsError):
                await store.append(other.id, [attrs.evolve(batch[0], session_id=other.id)])
            assert await store.last_seq(other.id) == 0

        self._with_store(make_store, body)

    def test_expected_seq_conflict_stores_nothing(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            assert self.seqs(await store.append(s.id, events_for(s.id, 2), expected_seq=0)) == [1, 2]
            with pytest.raises(SeqConflictError) as info:
                await store.append(s.id, events_for(s.id, 2), expected_seq=1)
            assert info.value.retryable
            assert await store.last_seq(s.id) == 2
            assert self.seqs(await store.append(s.id, events_for(s.id, 1), expected_seq=2)) == [3]
            for bad in (-1, "3", True):
                with pytest.raises(ValidationError):
                    await store.append(s.id, events_for(s.id, 1), expected_seq=bad)
            assert await store.last_seq(s.id) == 3

        self._with_store(make_store, body)

    def test_read_filters_and_last(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            for i in range(10):
                await store.append(
                    s.id,
                    [
                        Event(
                            session_id=s.id,
                            type="even" if i % 2 == 0 else "odd",
                            payload={"i": i},
                            run_id="r1" if i < 4 else "r2",
                        )
                    ],
                )
            assert self.seqs(await store.read(s.id, after=7)) == [8, 9, 10]
            assert self.seqs(await store.read(s.id, before=4)) == [1, 2, 3]
            assert self.seqs(await store.read(s.id, after=2, before=6)) == [3, 4, 5]
            assert self.seqs(await store.read(s.id, after=2, limit=2)) == [3, 4]
            assert self.seqs(await store.read(s.id, types=["odd"])) == [2, 4, 6, 8, 10]
            assert self.seqs(await store.read(s.id, types=["odd"], after=4, limit=2)) == [6, 8]
            assert self.seqs(await store.read(s.id, run_id="r1")) == [1, 2, 3, 4]
            assert self.seqs(await store.read(s.id, run_id="r2", types=["even"], after=5, limit=2)) == [7, 9]
            assert await store.read(s.id, run_id="nope") == []
            assert await store.read(s.id, after=10) == []
            assert self.seqs(await store.last(s.id, 3)) == [8, 9, 10]
            assert self.seqs(await store.last(s.id, 50)) == list(range(1, 11))
            assert await store.last(s.id, 0) == []
            for bad in (
                {"after": -1},
                {"after": True},
                {"before": 0},
                {"limit": -1},
                {"types": "odd"},
                {"run_id": 3},
                {"types": [None]},
            ):
                with pytest.raises(ValidationError):
                    await store.read(s.id, **bad)
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
                assert self.seqs(log) == list(range(1, len(log) + 1))
                assert len(log) == 8 * sum(1 + i % 3 for i in range(20))
                returned = sorted(seq for r in results[idx * 8 : (idx + 1) * 8] for seq in r)
                assert returned == self.seqs(log)

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
            assert self.seqs(log) == list(range(1, 101))
            assert sorted((e.payload["t"], e.payload["i"]) for e in log) == [
                (t, i) for t in range(4) for i in range(25)
            ]

        self._with_store(make_store, body)

    def test_wait_returns_new_events_or_times_out(self, make_store: Callable[[], Any]) -> None:
        async def body(store: Any) -> None:
            s = await self._session(store)
            await store.append(s.id, events_for(s.id, 2))
            assert self.seqs(await store.wait(s.id, after=1, timeout=5)) == [2]
            assert await store.wait(s.id, after=2, timeout=0.05) == []

            waiter = asyncio.create_task(store.wait(s.id, after=2, timeout=10))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await store.append(s.id, events_for(s.id, 1))
            got = await asyncio.wait_for(waiter, 10)
            assert self.seqs(got) == [3]

        self._with_store(make_store, body)

    def test_durable_data_survives_reopen(self, make_store: Callable[[], Any]) -> None:
        if not self.durable:
            pytest.skip("this store keeps nothing across instances (durable = False)")

        async def body() -> None:
            store = make_store()
            await store.open()
            s = await self._session(store, agent_id="keep")
            run = await create_run(store, Run(session_id=s.id, input=Message.user("x")))
            await store.append(s.id, events_for(s.id, 5))
            await store.close()
            again = make_store()
            await again.open()
            try:
                assert (await again.get_session(s.id)).agent_id == "keep"
                assert (await again.get_run(run.id)).input == Message.user("x")
                assert self.seqs(await again.read(s.id)) == [1, 2, 3, 4, 5]
                assert self.seqs(await again.append(s.id, events_for(s.id, 1))) == [6]
            finally:
                await again.close()

        run_async(body())
