"""A run's start stored behind its provider call (``[runtime] overlap_start``).

The store here holds the start unit back (a gate) so the window the overlap opens is wide and
deterministic: what may happen in it (the request goes out), what may not (anything of the run
stored or shown), and what each way the start can end does to the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asm_kernel import Kernel
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import StateError, StorageError
from asm_kernel.model import MessageDone, ProviderRequest, RunStatus, StreamEvent
from asm_kernel.writes import Committed, WriteUnit

START = "run_started"


class GatedStore(MemoryStore):
    """Holds back every unit that starts a run until :attr:`gate` is set; can refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.refuse: StorageError | None = None
        self.starts_committed = 0
        self.order: list[str] = []

    async def commit(self, unit: WriteUnit) -> Committed:
        starting = any(e.type == START for e in unit.events)
        if starting:
            self.order.append("start submitted")
            await self.gate.wait()
            if self.refuse is not None:
                raise self.refuse
        committed = await super().commit(unit)
        if starting:
            self.starts_committed += 1
            self.order.append("start stored")
        else:
            self.order.append("write " + ",".join(e.type for e in unit.events))
        return committed


class Watching(ScriptedProvider):
    """A scripted provider that notes, per request, how many starts the store had committed."""

    def __init__(self, store: GatedStore, turns: list[list[dict[str, Any]]]) -> None:
        super().__init__(turns)
        self.store = store
        self.seen: list[int] = []
        self.closed_early = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        self.seen.append(self.store.starts_committed)
        self.store.order.append("request sent")
        finished = False
        try:
            async for item in super().stream(request):
                finished = finished or isinstance(item, MessageDone)
                yield item
        finally:
            if not finished:  # closed before its answer was complete
                self.closed_early += 1


def make(store: GatedStore, provider: ScriptedProvider, **runtime: Any) -> Kernel:
    config = {"plugins": {"autoload": False}, "runtime": runtime}
    return Kernel(config, store=store, providers={"s": provider})


async def _open_gate_soon(store: GatedStore, after: float = 0.05) -> None:
    await asyncio.sleep(after)
    store.gate.set()


async def _run_meddled(k: Kernel, store: GatedStore, session_id: str) -> tuple[Any, list[Any]]:
    """Run in the session while its start waits at the gate; the result and the session's log."""
    opener = asyncio.create_task(_open_gate_soon(store))
    result = await k.run(session_id, "go")
    await opener
    return result, await k.sessions.events(session_id)


async def test_the_request_goes_out_while_the_start_is_being_stored() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"text": "hello there"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        seen: list[str] = []
        opener = asyncio.create_task(_open_gate_soon(store))
        async for item in k.stream_run(session.id, "hi"):
            if hasattr(item, "type"):
                seen.append(item.type)
        await opener
        result = item
        log = await k.sessions.events(session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "hello there"
    assert provider.seen == [0]  # the provider had the request before the start was stored
    assert store.order.index("request sent") < store.order.index("start stored")
    # ...but nothing of the run was stored or shown before its start: the caller's stream and
    # the log both begin with the start's events, gapless, in order.
    assert seen[:4] == ["session_activated", "run_started", "message_sent", "routing_decided"]
    assert seen == [e.type for e in log[1:]] and [e.seq for e in log] == list(range(1, len(log) + 1))
    later = [i for i, o in enumerate(store.order) if o.startswith("write") and i > store.order.index("start submitted")]
    assert later and store.order.index("start stored") < min(later)


async def test_overlap_start_false_waits_for_the_start_before_the_request() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"text": "hello"}]])
    async with make(store, provider, overlap_start=False) as k:
        opener = asyncio.create_task(_open_gate_soon(store))
        result = await k.run_once("hi")
        await opener
    assert result.status is RunStatus.COMPLETED
    assert provider.seen == [1] and store.order.index("start stored") < store.order.index("request sent")


async def test_a_stage_that_needs_the_stored_run_awaits_started() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"text": "hello"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        stored: list[RunStatus] = []

        async def needs_the_record(state: Any) -> None:
            await state.started()
            stored.append((await k.sessions.get_run(state.run.id)).status)

        k.pipeline.add("needs_the_record", needs_the_record, after="start")
        opener = asyncio.create_task(_open_gate_soon(store))
        result = await k.run(session.id, "go")
        await opener
    assert result.status is RunStatus.COMPLETED
    assert stored == [RunStatus.RUNNING] and provider.seen == [1]


async def test_a_start_that_races_another_write_is_abandoned_and_the_run_starts_again() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"text": "first answer, never kept"}], [{"text": "the answer"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        await k.sessions.append(session.id, [("app.note", {"n": 1})])
        meddled: list[int] = []

        async def meddle(state: Any, proceed: Any) -> None:
            # After prepare read the transcript, before the start is stored: someone else
            # writes to the session, so the log is not where the run's context says it is.
            if not meddled:
                meddled.append(1)
                await k.sessions.append(session.id, [("app.note", {"n": 2})])
            await proceed()

        k.pipeline.wrap("start", meddle)
        result, log = await _run_meddled(k, store, session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "the answer"
    # Two requests went out; the first was abandoned before any of its output was kept, and
    # the second (its start waited this time) was sent once the start was stored.
    assert len(provider.requests) == 2 and provider.closed_early == 1 and provider.seen == [0, 1]
    types = [e.type for e in log]
    assert types.count("run_started") == 1 and types.count("message_streamed") >= 1
    assert "first answer" not in "".join(str(e.payload) for e in log)
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    # The second attempt's context saw both notes' positions: its start came after them.
    assert types.index("run_started") > max(i for i, t in enumerate(types) if t == "app.note")
    assert result.usage.output_tokens > 0


async def test_a_raced_start_voids_its_attempt_even_when_a_stage_failed_first() -> None:
    """The attempt failed before the race was known (a stage raised before any write): the
    attempt did not count, so the run starts again instead of failing with its error."""
    store = GatedStore()
    provider = Watching(store, [[{"text": "the answer"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        meddled: list[int] = []

        async def meddle(state: Any, proceed: Any) -> None:
            if not meddled:
                await k.sessions.append(session.id, [("app.note", {})])
            await proceed()

        async def fail_once(state: Any, proceed: Any) -> None:
            if not meddled:
                meddled.append(1)
                raise RuntimeError("a stage of the voided attempt failed")
            await proceed()

        k.pipeline.wrap("start", meddle)
        k.pipeline.wrap("call", fail_once)
        result, log = await _run_meddled(k, store, session.id)
    assert result.status is RunStatus.COMPLETED and result.output == "the answer"
    types = [e.type for e in log]
    assert "error_occurred" not in types and types.count("run_started") == 1
    assert len(provider.requests) == 1


async def test_a_start_the_store_refuses_fails_the_run_and_abandons_the_call() -> None:
    store = GatedStore()
    store.refuse = StorageError("the disk is full", hint="free some space")
    provider = Watching(store, [[{"text": "an answer nobody keeps " * 4}]])
    async with make(store, provider) as k:
        k.sessions.commit_backoff = 0.0
        session = await k.sessions.create()
        opener = asyncio.create_task(_open_gate_soon(store, 0.02))
        result = await k.run(session.id, "go", raise_on_error=False)
        await opener
        store.refuse = None
        log = await k.sessions.events(session.id)
        runs = await k.sessions.runs(session.id)
    assert result.status is RunStatus.FAILED and result.error is not None
    assert result.error["code"].startswith("storage")
    assert provider.closed_early == 1  # the request was sent; its stream was closed unread
    # The run's record and its log agree: a failed run, its error, nothing of the start.
    assert [r.status for r in runs] == [RunStatus.FAILED]
    assert [e.type for e in log] == ["session_created", "error_occurred", "run_failed"] or [e.type for e in log] == [
        "error_occurred",
        "run_failed",
    ]
    assert not any(e.type in ("run_started", "message_streamed") for e in log)


async def test_a_cancel_while_the_start_is_in_flight_still_ends_the_run_after_its_start() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"delay": 5}, {"text": "too late"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        task = asyncio.create_task(k.run(session.id, "go"))
        while not provider.seen:
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.02)
        assert not task.done()  # the terminal unit waits for the start to settle
        store.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        log = await k.sessions.events(session.id)
        runs = await k.sessions.runs(session.id)
    types = [e.type for e in log]
    assert types[-1] == "run_cancelled" and types.index("run_started") < types.index("run_cancelled")
    assert [r.status for r in runs] == [RunStatus.CANCELLED]


async def test_a_submitted_run_cancelled_meanwhile_is_not_this_workers_to_close() -> None:
    store = GatedStore()
    provider = Watching(store, [[{"text": "x"}]])
    async with make(store, provider) as k:
        session = await k.sessions.create()
        handle = await k.runtime.submit_run(session.id, "go")
        while not provider.seen:  # the worker's start waits at the gate; its request is out
            await asyncio.sleep(0.005)
        await k.sessions.cancel_pending(handle.run_id, "changed my mind")
        store.gate.set()
        try:
            outcome = await asyncio.wait_for(handle.result(), 10)
        except StateError:
            outcome = None
        runs = await k.sessions.runs(session.id)
        log = await k.sessions.events(session.id)
    assert [r.status for r in runs] == [RunStatus.CANCELLED]
    assert outcome is None or outcome.status is RunStatus.CANCELLED
    types = [e.type for e in log]
    assert "run_started" not in types and types.count("run_cancelled") == 1
    assert provider.closed_early == 1 or provider.requests == []


def test_start_raced_is_a_state_error_with_its_own_code() -> None:
    from asm_kernel.pipeline.overlap import StartRaced

    assert issubclass(StartRaced, StateError) and StartRaced.code == "state.start_raced"
