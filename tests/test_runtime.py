"""The runtime: per-session queues, limits, cancel/interrupt, subscriptions, recovery."""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asm_kernel import Kernel, Message, MessageDone, ProviderRequest, Run, RunStatus, TextBlock, TextDelta
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import (
    ConfigError,
    LimitExceededError,
    QueueFullError,
    RunNotFoundError,
    SessionNotFoundError,
    StateError,
)
from asm_kernel.testing.stores import create_run, replace_run


class SlowProvider:
    """Answers with the input after ``delay`` seconds; tracks concurrency per session and overall."""

    capabilities = frozenset({"streaming"})
    models = ()
    default_model = "slow-1"

    def __init__(self, delay: float = 0.05, name: str = "slow") -> None:
        self.name = name
        self.delay = delay
        self.current = 0
        self.peak = 0
        self.per_session: dict[str, int] = defaultdict(int)
        self.peak_per_session: dict[str, int] = defaultdict(int)
        self.order: list[str] = []

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
        sid = request.metadata["session_id"]
        self.current += 1
        self.per_session[sid] += 1
        self.peak = max(self.peak, self.current)
        self.peak_per_session[sid] = max(self.peak_per_session[sid], self.per_session[sid])
        try:
            # The newest input block: an interrupted run's input stays in the merged user turn.
            text = request.messages[-1].content[-1].text
            self.order.append(text)
            yield TextDelta(text[:1])
            await asyncio.sleep(self.delay)
            yield TextDelta(text[1:])
            yield MessageDone(Message("assistant", (TextBlock(text),)))
        finally:
            self.current -= 1
            self.per_session[sid] -= 1

    async def aclose(self) -> None:
        pass


def make(provider: SlowProvider | None = None, store: MemoryStore | None = None, **runtime: Any) -> Kernel:
    return Kernel(
        {"store": {"use": "memory"}, "runtime": runtime}, providers={"slow": provider or SlowProvider()}, store=store
    )


async def run_spans(kernel: Kernel, session_id: str) -> list[tuple[int, int, str]]:
    """(seq of run_started, seq of terminal event, run_id) per run, from the stored log."""
    starts: dict[str, int] = {}
    spans = []
    for e in await kernel.sessions.events(session_id):
        if e.type == "run_started":
            starts[e.run_id] = e.seq
        elif e.type in ("run_completed", "run_failed", "run_cancelled", "run_timed_out") and e.run_id in starts:
            spans.append((starts[e.run_id], e.seq, e.run_id))
    return spans


async def test_runs_of_a_session_run_one_at_a_time_in_submission_order() -> None:
    provider = SlowProvider(0.02)
    async with make(provider) as k:
        s = await k.sessions.create()
        handles = [await k.runtime.submit_run(s.id, f"m{i}") for i in range(5)]
        results = [await h for h in handles]
        spans = await run_spans(k, s.id)
    assert [r.output for r in results] == [f"m{i}" for i in range(5)]
    assert provider.order == [f"m{i}" for i in range(5)]
    assert [run_id for *_, run_id in spans] == [h.run_id for h in handles]
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end < start  # the next run starts only after the previous one ended
    assert provider.peak_per_session[s.id] == 1


async def test_max_concurrent_runs_allows_overlap_up_to_the_limit() -> None:
    provider = SlowProvider(0.05)
    async with make(provider, max_concurrent_runs=2) as k:
        s = await k.sessions.create()
        handles = [await k.runtime.submit_run(s.id, f"m{i}") for i in range(6)]
        await asyncio.gather(*(h.result() for h in handles))
    assert provider.peak_per_session[s.id] == 2


async def test_sessions_progress_independently_under_the_global_cap() -> None:
    provider = SlowProvider(0.03)
    async with make(provider, max_running_runs=3) as k:
        sessions = [await k.sessions.create() for _ in range(8)]
        handles = [await k.runtime.submit_run(s.id, f"{s.id}-{i}") for i in range(2) for s in sessions]
        results = await asyncio.gather(*(h.result() for h in handles))
        assert k.runtime.limiter.running == 0
        assert k.runtime.limiter.stats().peak_running == 3
    assert all(r.status is RunStatus.COMPLETED for r in results)
    assert provider.peak == 3 and max(provider.peak_per_session.values()) == 1


async def test_a_full_queue_refuses_at_once() -> None:
    async with make(SlowProvider(0.2), max_queued_runs=2) as k:
        s = await k.sessions.create()
        first = await k.runtime.submit_run(s.id, "running")
        while not (await k.runtime.status(s.id)).running:  # let it start, so two more fit the queue
            await asyncio.sleep(0.005)
        await k.runtime.submit_run(s.id, "q1")
        await k.runtime.submit_run(s.id, "q2")
        with pytest.raises(QueueFullError, match="max_queued_runs = 2") as info:
            await k.runtime.submit_run(s.id, "q3")
        assert info.value.retryable
        status = await k.runtime.status(s.id)
        assert len(status.running) == 1 and len(status.queued) == 2
        await first
        await k.runtime.drain(s.id)
        runs = await k.sessions.runs(s.id)
    assert len(runs) == 3 and all(r.status is RunStatus.COMPLETED for r in runs)


async def test_cancel_queued_and_running_runs() -> None:
    async with make(SlowProvider(30)) as k:
        s = await k.sessions.create()
        running = await k.runtime.submit_run(s.id, "long")
        queued = await k.runtime.submit_run(s.id, "waiting")
        while not (await k.runtime.status(s.id)).running:
            await asyncio.sleep(0.01)
        q = await k.runtime.cancel_run(queued.run_id)
        assert q.status is RunStatus.CANCELLED
        # The provider would sleep 30 s: the guard only stops a hang, the status proves the cancel.
        r = await asyncio.wait_for(k.runtime.cancel_run(running.run_id), 20)
        assert r.status is RunStatus.CANCELLED
        with pytest.raises(StateError, match="already ended"):
            await k.runtime.cancel_run(running.run_id)
        events = await k.sessions.events(s.id)
        assert k.runtime.limiter.running == 0
    cancelled = [e for e in events if e.type == "run_cancelled"]
    assert {e.run_id for e in cancelled} == {queued.run_id, running.run_id}
    started = {e.run_id for e in events if e.type == "run_started"}
    assert queued.run_id not in started  # a cancelled queued run never starts


async def test_cancel_twice_during_cleanup_keeps_one_terminal_event() -> None:
    async with make(SlowProvider(30)) as k:
        s = await k.sessions.create()
        h = await k.runtime.submit_run(s.id, "long")
        while not (await k.runtime.status(s.id)).running:
            await asyncio.sleep(0.01)
        task = k.runtime.lookup(s.id)._running[h.run_id]
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        result = await h
        events = await k.sessions.events(s.id, types=["run_cancelled", "run_completed", "run_failed"])
    assert result.status is RunStatus.CANCELLED
    assert [e.type for e in events] == ["run_cancelled"]


class HangingFirst(SlowProvider):
    """Like SlowProvider, but the input "first" never finishes on its own (only a cancel ends it)."""

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
        async for item in super().stream(request):
            if request.messages[-1].content[-1].text == "first":
                await asyncio.Event().wait()
            yield item


async def test_interrupt_cancels_the_running_run_and_runs_new_input_next() -> None:
    # The first run cannot finish before the interrupt lands, however loaded the machine is.
    provider = HangingFirst(0.01)
    async with make(provider) as k:
        s = await k.sessions.create()
        first = await k.runtime.submit_run(s.id, "first")
        later = await k.runtime.submit_run(s.id, "later")
        while not (await k.runtime.status(s.id)).running:
            await asyncio.sleep(0.01)
        urgent = await k.runtime.interrupt_run(s.id, "urgent")
        results = [await first, await urgent, await later]
        cancelled = await k.sessions.events(s.id, types=["run_cancelled"])
    assert [r.status for r in results] == [RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.COMPLETED]
    assert provider.order == ["first", "urgent", "later"]
    assert cancelled[0].payload["reason"] == "interrupted"


async def test_drain_finishes_the_queue_and_refuses_new_work() -> None:
    async with make(SlowProvider(0.02)) as k:
        s = await k.sessions.create()
        handles = [await k.runtime.submit_run(s.id, f"m{i}") for i in range(3)]
        drain = asyncio.create_task(k.runtime.drain(s.id))
        await asyncio.sleep(0)
        with pytest.raises(StateError, match="draining"):
            await k.runtime.submit_run(s.id, "late")
        await drain
        assert all(h.done() for h in handles)
        assert (await k.runtime.status(s.id)).idle


async def test_idempotent_submission_runs_once() -> None:
    provider = SlowProvider(0.02)
    async with make(provider) as k:
        s = await k.sessions.create()
        a = await k.runtime.submit_run(s.id, "pay invoice 7", idempotency_key="inv-7")
        b = await k.runtime.submit_run(s.id, "pay invoice 7", idempotency_key="inv-7")
        assert a.run_id == b.run_id
        await a
        c = await k.runtime.submit_run(s.id, "pay invoice 7", idempotency_key="inv-7")
        assert c.run_id == a.run_id and (await c).output == "pay invoice 7"
    assert provider.order == ["pay invoice 7"]


async def test_slots_are_released_however_runs_end() -> None:
    from asm_kernel.builtin.scripted import ScriptedProvider

    failing = ScriptedProvider([[{"error": "provider.server_error"}]])
    k = Kernel({"store": {"use": "memory"}, "runtime": {"max_running_runs": 1}}, providers={"f": failing})
    async with k:
        s = await k.sessions.create()
        results = [await k.runtime.execute_run(s.id, f"x{i}") for i in range(3)]
        assert k.runtime.limiter.running == 0
    assert [r.status for r in results] == [RunStatus.FAILED] * 3
    assert results[0].error["code"] == "provider.server_error"


async def test_subscribe_replays_then_follows_without_gap_or_duplicate() -> None:
    async with make(SlowProvider(0.01)) as k:
        s = await k.sessions.create()
        await k.runtime.execute_run(s.id, "before")
        seen: list[int] = []

        async def consume() -> None:
            async for event in k.runtime.subscribe(s.id, after=2):
                seen.append(event.seq)
                if event.type == "run_completed" and event.payload["output"] == "after":
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.02)
        await k.runtime.execute_run(s.id, "after")
        await asyncio.wait_for(consumer, 10)
        last = await k.store.last_seq(s.id)
    assert seen == list(range(3, last + 1))


async def test_wait_long_polls() -> None:
    async with make(SlowProvider(0.01)) as k:
        s = await k.sessions.create()
        cursor = await k.store.last_seq(s.id)
        assert await k.runtime.wait(s.id, after=cursor, timeout=0.02) == []
        waiter = asyncio.create_task(k.runtime.wait(s.id, after=cursor, timeout=10))
        await asyncio.sleep(0.01)
        await k.runtime.execute_run(s.id, "x")
        got = await waiter
        assert got and got[0].seq == cursor + 1
        with pytest.raises(SessionNotFoundError):
            await k.runtime.wait("nope", after=0, timeout=0)


async def test_paused_session_holds_its_queue_until_resumed() -> None:
    provider = SlowProvider(0.01)
    async with make(provider) as k:
        s = await k.sessions.create()
        await k.sessions.activate(s.id)
        await k.sessions.pause(s.id, reason="human agent took over")
        h = await k.runtime.submit_run(s.id, "while paused")
        await asyncio.sleep(0.05)
        assert not h.done() and provider.order == []
        await k.sessions.resume(s.id)
        assert (await h.result(timeout=5)).output == "while paused"


async def test_paused_session_can_reject_instead() -> None:
    async with make(SlowProvider(0.01), on_paused="reject") as k:
        s = await k.sessions.create()
        await k.sessions.activate(s.id)
        await k.sessions.pause(s.id)
        with pytest.raises(StateError, match="paused"):
            await k.runtime.submit_run(s.id, "x")


async def test_shutdown_keeps_queued_runs_for_the_next_start() -> None:
    store = MemoryStore()
    provider = SlowProvider(0.5)
    k1 = make(provider, store=store)
    await k1.start()
    s = await k1.sessions.create()
    first = await k1.runtime.submit_run(s.id, "one")
    queued = [await k1.runtime.submit_run(s.id, f"q{i}") for i in range(2)]
    while not (await k1.runtime.status(s.id)).running:
        await asyncio.sleep(0.01)
    await k1.runtime.shutdown(grace=5)
    assert (await first).status is RunStatus.COMPLETED
    assert [(await store.get_run(h.run_id)).status for h in queued] == [RunStatus.PENDING] * 2
    await store.open()  # the memory store keeps its data across kernels in one process
    provider2 = SlowProvider(0.01)
    async with make(provider2, store=store) as k2:
        report = await k2.runtime.start()
        assert report.resumed == tuple(h.run_id for h in queued)
        results = [await k2.runtime.await_run(h.run_id) for h in queued]
    assert [r.output for r in results] == ["q0", "q1"] and provider2.order == ["q0", "q1"]


async def _leave_running(store: MemoryStore, **metadata: Any) -> tuple[str, str]:
    """What a process killed mid-run leaves behind: a session and a run stuck `running`."""
    async with make(SlowProvider(0.01), store=store) as k:
        s = await k.sessions.create()
        await k.sessions.activate(s.id)
        run = await create_run(
            store, Run(session_id=s.id, input=Message.user("interrupted work"), provider="slow", metadata=metadata)
        )
        # Its owner is gone: the lease it held has expired (ttl 0).
        await replace_run(store, run.transition(RunStatus.RUNNING, owner="dead", lease_token=1), lease_ttl=0)
    await store.open()
    return s.id, run.id


async def test_crashed_runs_are_closed_on_start() -> None:
    store = MemoryStore()
    sid, rid = await _leave_running(store)
    async with make(SlowProvider(0.01), store=store) as k:
        report = await k.runtime.start()
        run = await k.sessions.get_run(rid)
        failed = await k.sessions.events(sid, types=["run_failed"])
    assert report.crashed == (rid,) and report.requeued == ()
    assert run.status is RunStatus.FAILED and run.error["code"] == "runtime.crashed"
    assert failed[0].payload["reason"] == "crashed"


async def test_crashed_runs_can_be_requeued_a_bounded_number_of_times() -> None:
    store = MemoryStore()
    _sid, rid = await _leave_running(store)
    provider = SlowProvider(0.01)
    async with make(provider, store=store, recovery="requeue", max_recovery_attempts=1) as k:
        report = await k.runtime.start()
        assert report.crashed == (rid,) and len(report.requeued) == 1
        again = await k.runtime.await_run(report.requeued[0])
    assert again.output == "interrupted work" and provider.order == ["interrupted work"]
    # A run that already used its attempts is only closed.
    store2 = MemoryStore()
    _, rid2 = await _leave_running(store2, **{"asm.recovery_attempt": 1})
    async with make(SlowProvider(0.01), store=store2, recovery="requeue", max_recovery_attempts=1) as k:
        report = await k.runtime.start()
    assert report.crashed == (rid2,) and report.requeued == ()


async def test_many_sessions_keep_their_invariants() -> None:
    provider = SlowProvider(0.005)
    async with make(provider, max_running_runs=50) as k:
        sessions = [await k.sessions.create() for _ in range(120)]
        handles = [await k.runtime.submit_run(s.id, f"{n}-{i}") for i in range(3) for n, s in enumerate(sessions)]
        results = await asyncio.gather(*(h.result() for h in handles))
        assert all(r.status is RunStatus.COMPLETED for r in results)
        for n, s in enumerate(sessions):
            spans = await run_spans(k, s.id)
            outputs = [e.payload["output"] for e in await k.sessions.events(s.id, types=["run_completed"])]
            assert outputs == [f"{n}-{i}" for i in range(3)]
            assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
        assert k.runtime.limiter.stats().peak_running <= 50 and k.runtime.limiter.running == 0


async def test_bad_ids_and_limits() -> None:
    async with make(SlowProvider(0.01), max_active_sessions=1) as k:
        with pytest.raises(SessionNotFoundError):
            await k.runtime.submit_run("ses_nope", "x")
        with pytest.raises(RunNotFoundError):
            await k.runtime.cancel_run("run_nope")
        a = await k.sessions.create()
        b = await k.sessions.create()
        h = await k.runtime.submit_run(a.id, "busy")
        with pytest.raises(LimitExceededError, match="max_active_sessions"):
            await k.runtime.submit_run(b.id, "x")
        await h
        assert (await k.runtime.execute_run(b.id, "now fits")).output == "now fits"  # idle server evicted
        await k.sessions.complete(b.id)
        with pytest.raises(StateError):
            await k.runtime.submit_run(b.id, "x")
    for bad in ({"max_concurrent_runs": 0}, {"max_queued_runs": -1}, {"idle_timeout": 0}):
        with pytest.raises(ConfigError, match=r"runtime\."):
            Kernel({"store": {"use": "memory"}, "runtime": bad})


def test_sync_wrappers() -> None:
    from asm_kernel import SyncKernel

    with SyncKernel({"store": {"use": "memory"}}) as asm:
        report = asm.recover()
        assert report.crashed == ()
        s = asm.create_session()
        assert asm.execute_run(s.id, "queued hello").output == "queued hello"
