"""Regression tests for the run-flow and runtime defects found in the kernel v2 review.

Each test names the defect it covers; all go through the public API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asm_kernel import Kernel, Message, MessageDone, ProviderRequest, RunStatus, TextBlock, TextDelta, Usage
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import (
    AsmRuntimeError,
    ProviderServerError,
    QueueFullError,
    StateError,
    StorageError,
    ValidationError,
)
from asm_kernel.secrets import register_secret
from asm_kernel.testing.faults import FaultyStore
from asm_kernel.testing.stores import run_async

TERMINAL = ("run_completed", "run_failed", "run_cancelled", "run_timed_out")


class Scripted:
    """A provider whose behaviour each test sets: ``script(request)`` is an async generator."""

    capabilities = frozenset({"streaming"})
    models = ()
    default_model = "t-1"

    def __init__(self, script: Any, name: str = "t") -> None:
        self.name = name
        self.script = script
        self.calls = 0

    def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
        self.calls += 1
        return self.script(request)

    async def aclose(self) -> None:
        pass


async def answer(request: ProviderRequest, text: str = "hello there") -> AsyncIterator[Any]:
    yield TextDelta(text[:5])
    yield TextDelta(text[5:])
    yield MessageDone(Message("assistant", (TextBlock(text),)), usage=Usage(3, 2))


def kernel_with(script: Any = answer, store: Any = None, **config: Any) -> Kernel:
    return Kernel(
        {"store": {"use": "memory"}, "plugins": {"autoload": False}, **config},
        providers={"t": Scripted(script)},
        store=store,
    )


async def terminal_types(kernel: Kernel, session_id: str, run_id: str) -> list[str]:
    return [e.type for e in await kernel.sessions.events(session_id, run_id=run_id, types=list(TERMINAL))]


async def test_a_store_failure_during_a_run_is_a_typed_error_and_never_leaves_it_running() -> None:
    # Was: a bare AssertionError from SessionManager._result_of_stream (None under python -O),
    # and the run left `running`.
    inner = MemoryStore()
    faulty = FaultyStore(inner, close_inner=False)
    kernel = kernel_with(store=faulty)
    kernel.sessions.commit_backoff = 0.0
    async with kernel:
        session = await kernel.sessions.create()
        faulty.arm(2, "down")  # the store goes away after the run started
        with pytest.raises(StorageError) as info:
            await kernel.sessions.run(session.id, "hi")
        assert not isinstance(info.value, AssertionError)
        faulty.heal()
        assert await kernel.sessions.closer.flush() == 0
        (run,) = await inner.list_runs(session_id=session.id)
        assert run.status is RunStatus.FAILED and run.error is not None
        assert run.error["code"] == "storage.error"
        assert await terminal_types(kernel, session.id, run.id) == ["run_failed"]


async def test_an_unexpected_exception_is_raised_as_the_typed_error_it_was_stored_as() -> None:
    async def broken(request: ProviderRequest) -> AsyncIterator[Any]:
        raise ZeroDivisionError("division by zero in the adapter")
        yield  # pragma: no cover

    async with kernel_with(broken) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(AsmRuntimeError) as info:
            await kernel.sessions.run(session.id, "hi")
        (run,) = await kernel.sessions.runs(session.id)
        assert info.value.code == run.error["code"] == "runtime.error"
        assert "ZeroDivisionError" in info.value.message
        assert [e.type for e in await kernel.sessions.events(session.id)][-2:] == ["error_occurred", "run_failed"]


async def test_a_cancelled_error_raised_inside_a_run_ends_it_cancelled() -> None:
    async def cancels(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta("par")
        raise asyncio.CancelledError("adapter gave up")

    async with kernel_with(cancels) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(asyncio.CancelledError):
            await kernel.sessions.run(session.id, "hi")
        (run,) = await kernel.sessions.runs(session.id)
        assert run.status is RunStatus.CANCELLED
        assert await terminal_types(kernel, session.id, run.id) == ["run_cancelled"]


def test_keyboard_interrupt_inside_a_run_stores_its_end_then_propagates() -> None:
    store = MemoryStore()

    async def interrupted(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta("par")
        raise KeyboardInterrupt

    async def main() -> None:
        async with kernel_with(interrupted, store=store) as kernel:
            session = await kernel.sessions.create()
            await kernel.sessions.run(session.id, "hi")

    with pytest.raises(KeyboardInterrupt):
        run_async(main())

    async def check() -> None:
        await store.open()
        (session,) = await store.list_sessions()
        (run,) = await store.list_runs(session_id=session.id)
        assert run.status is RunStatus.CANCELLED
        (end,) = await store.read(session.id, types=list(TERMINAL))
        assert end.type == "run_cancelled" and end.payload["reason"] == "interrupted"

    run_async(check())


async def test_a_run_whose_outcome_cannot_be_stored_fails_its_handle_instead_of_resolving_running() -> None:
    # Was: the runtime handle resolved with status `running` and error None.
    inner = MemoryStore()
    faulty = FaultyStore(inner, close_inner=False)
    kernel = kernel_with(store=faulty)
    kernel.sessions.commit_backoff = 0.0
    async with kernel:
        session = await kernel.sessions.create()
        handle = await kernel.runtime.submit_run(session.id, "hi")
        faulty.arm(2, "down")
        with pytest.raises(StorageError):
            await handle.result(timeout=10)
        faulty.heal()
        await kernel.sessions.closer.flush()
        (run,) = await inner.list_runs(session_id=session.id)
        assert run.status.terminal and len(await terminal_types(kernel, session.id, run.id)) == 1


class _GatedStore(MemoryStore):
    """Holds a terminal unit until released (to land a cancel in the middle of the clean-up)."""

    def __init__(self) -> None:
        super().__init__()
        self.terminal_started = asyncio.Event()
        self.release = asyncio.Event()

    async def commit(self, unit: Any) -> Any:
        if any(e.type in TERMINAL for e in unit.events):
            self.terminal_started.set()
            await self.release.wait()
        return await super().commit(unit)


async def test_a_cancel_during_timeout_clean_up_cannot_abort_the_terminal_write() -> None:
    async def slow(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta("thinking")
        await asyncio.sleep(30)
        yield MessageDone(Message.assistant("late"))

    store = _GatedStore()
    async with kernel_with(slow, store=store) as kernel:
        session = await kernel.sessions.create()
        task = asyncio.create_task(kernel.sessions.run(session.id, "hi", timeout=0.05, raise_on_error=False))
        await store.terminal_started.wait()
        task.cancel("impatient")
        await asyncio.sleep(0.01)
        task.cancel("more impatient")
        store.release.set()
        await asyncio.gather(task, return_exceptions=True)
        (run,) = await kernel.sessions.runs(session.id)
        assert run.status is RunStatus.TIMED_OUT
        assert await terminal_types(kernel, session.id, run.id) == ["run_timed_out"]
        types = [e.type for e in await kernel.sessions.events(session.id)]
        assert types[-2:] == ["error_occurred", "run_timed_out"]


async def test_two_concurrent_cancels_of_a_queued_run_store_one_terminal_event() -> None:
    async with kernel_with() as kernel:
        session = await kernel.sessions.create()
        run = await kernel.sessions.start_run(session.id, "queued")
        results = await asyncio.gather(
            *(kernel.sessions.cancel_pending(run.id, f"cancel {i}") for i in range(5)), return_exceptions=True
        )
        done = [r for r in results if not isinstance(r, BaseException)]
        assert len(done) == 1 and done[0].status is RunStatus.CANCELLED
        assert all(isinstance(r, StateError) for r in results if isinstance(r, BaseException))
        assert await terminal_types(kernel, session.id, run.id) == ["run_cancelled"]


async def test_the_queue_bound_holds_under_concurrent_submits() -> None:
    # Was: the bound was checked before awaited store writes, so 200 concurrent submits to a
    # session bounded at 3 were all accepted.
    async with kernel_with(runtime={"max_queued_runs": 3}) as kernel:
        session = await kernel.sessions.create()
        await kernel.sessions.activate(session.id)
        await kernel.sessions.pause(session.id, "hold the queue")
        results = await asyncio.gather(
            *(kernel.runtime.submit_run(session.id, f"q{i}") for i in range(200)), return_exceptions=True
        )
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(accepted) == 3 and all(isinstance(r, QueueFullError) for r in refused)
        assert len(await kernel.sessions.runs(session.id, status=RunStatus.PENDING)) == 3
        await kernel.sessions.resume(session.id)
        done = [await h.result(timeout=10) for h in accepted]
        assert [r.status for r in done] == [RunStatus.COMPLETED] * 3


async def test_after_a_drain_the_session_accepts_runs_again_and_status_shows_limits() -> None:
    async with kernel_with(runtime={"max_queued_runs": 7, "max_concurrent_runs": 2}) as kernel:
        session = await kernel.sessions.create()
        handles = [await kernel.runtime.submit_run(session.id, f"r{i}") for i in range(3)]

        async def follow() -> None:
            async for _ in kernel.runtime.subscribe(session.id):
                pass

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.01)
        await kernel.runtime.drain(session.id, timeout=10)
        assert all(h.done() for h in handles)
        again = await kernel.runtime.submit_run(session.id, "after the drain")
        assert (await again.result(timeout=10)).status is RunStatus.COMPLETED
        status = await kernel.runtime.status(session.id)
        assert status.accepting and not status.draining
        assert (status.max_concurrent_runs, status.max_queued_runs, status.subscribers) == (2, 7, 1)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        assert (await kernel.runtime.status(session.id)).subscribers == 0


async def test_an_answer_is_kept_when_the_provider_hangs_in_clean_up() -> None:
    # Was: message_received never stored; the run timed out with empty output.
    closed = asyncio.Event()

    async def hangs(request: ProviderRequest) -> AsyncIterator[Any]:
        try:
            yield TextDelta("the whole ")
            yield TextDelta("answer")
            yield MessageDone(Message.assistant("the whole answer"))
            await asyncio.sleep(3600)  # never returns on its own
        finally:
            await asyncio.sleep(3600)  # and its clean-up hangs too
            closed.set()

    async with kernel_with(hangs) as kernel:
        result = await kernel.run_once("hi", timeout=30)
        assert result.status is RunStatus.COMPLETED and result.output == "the whole answer"
        received = await kernel.sessions.events(result.session_id, types=["message_received"])
        assert len(received) == 1


async def test_a_session_cannot_complete_while_a_run_streams() -> None:
    gate = asyncio.Event()

    async def waits(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta("par")
        await gate.wait()
        yield MessageDone(Message.assistant("partial done"))

    async with kernel_with(waits) as kernel:
        session = await kernel.sessions.create()
        task = asyncio.create_task(kernel.sessions.run(session.id, "hi"))
        while not await kernel.sessions.events(session.id, types=["message_streamed"]):
            await asyncio.sleep(0.005)
        with pytest.raises(StateError) as info:
            await kernel.sessions.complete(session.id)
        assert "running" in info.value.message
        gate.set()
        await task
        await kernel.sessions.complete(session.id)
        types = [e.type for e in await kernel.sessions.events(session.id)]
        assert types[-1] == "session_completed" and types.count("session_completed") == 1


@pytest.mark.parametrize(
    "options",
    [
        {"max_turns": 0},
        {"timeout": -5},
        {"timeout": float("nan")},
        {"temperature": -1},
        {"requires": ["stremaing"]},
        {"exclude": ["nobody"]},
        {"max_tokens": True},
        {"nonsense": 1},
    ],
)
async def test_bad_run_options_are_refused_at_submit_and_nothing_is_stored(options: dict[str, Any]) -> None:
    async with kernel_with() as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ValidationError) as info:
            await kernel.runtime.submit_run(session.id, "hi", **options)
        assert info.value.path and info.value.path.split("[")[0] == next(iter(options))
        with pytest.raises(ValidationError):
            await kernel.sessions.run(session.id, "hi", **options)
        assert await kernel.sessions.runs(session.id) == []
        assert [e.type for e in await kernel.sessions.events(session.id)] == ["session_created"]


async def test_the_resilience_deadline_bounds_a_provider_that_never_answers() -> None:
    async def silent(request: ProviderRequest) -> AsyncIterator[Any]:
        await asyncio.sleep(3600)
        yield TextDelta("never")  # pragma: no cover

    async with kernel_with(silent, resilience={"deadline": 0.2}) as kernel:
        result = await kernel.run_once("hi", raise_on_error=False)
        assert result.status is RunStatus.FAILED and result.error["code"] == "provider.timeout"


async def test_usage_of_a_failed_attempt_is_recorded() -> None:
    attempts = []

    async def flaky(request: ProviderRequest) -> AsyncIterator[Any]:
        attempts.append(1)
        if len(attempts) == 1:
            yield TextDelta("")  # nothing shown yet, so a retry is allowed
            raise ProviderServerError("upstream broke", usage=Usage(input_tokens=40))
        yield TextDelta("ok")
        yield MessageDone(Message.assistant("ok"), usage=Usage(40, 1))

    async with kernel_with(flaky, resilience={"initial_backoff": 0.0}) as kernel:
        result = await kernel.run_once("hi")
        assert result.usage.input_tokens == 80 and result.usage.output_tokens == 1
        usage = await kernel.sessions.events(result.session_id, types=["token_usage_updated"])
        assert [u.payload.get("failed_attempt") for u in usage] == [1, None]


async def test_unknown_usage_is_an_unknown_cost_never_zero() -> None:
    from asm_kernel import ModelInfo, Price

    class Priced(Scripted):
        models = (ModelInfo("t-1", 1000, 100, Price(1.0, 2.0)),)

    async def no_usage(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta("ok")
        yield MessageDone(Message.assistant("ok"))

    kernel = Kernel({"store": {"use": "memory"}}, providers={"t": Priced(no_usage)})
    async with kernel:
        result = await kernel.run_once("hi")
        assert result.cost is None
        (update,) = await kernel.sessions.events(result.session_id, types=["token_usage_updated"])
        assert update.payload["usage"] is None and update.payload["cost"] is None


async def test_a_secret_a_provider_echoes_is_stored_and_raised_nowhere() -> None:
    canary = "sk-canary-7d1f0c9e8b2a4"
    register_secret(canary)

    async def leaks(request: ProviderRequest) -> AsyncIterator[Any]:
        yield TextDelta(f"your key is {canary}")
        raise ProviderServerError(f"upstream says: bad key {canary}", param=canary, hint=f"rotate {canary}", status=500)

    async with kernel_with(leaks, resilience={"max_attempts": 1}) as kernel:
        session = await kernel.sessions.create()
        with pytest.raises(ProviderServerError) as info:
            await kernel.sessions.run(session.id, "hi")
        raised = f"{info.value} {info.value!r} {info.value.details} {info.value.to_dict()}"
        assert canary not in raised and info.value.__cause__ is None
        stored = [e.payload for e in await kernel.sessions.events(session.id)]
        records = [r.error for r in await kernel.sessions.runs(session.id)]
        assert canary not in repr(stored) + repr(records)
        assert "[redacted]" in repr(stored)
