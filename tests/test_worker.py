"""The shared run queue: runs submitted without executing, claimed and run by workers, leases taken over."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asm_kernel import Kernel, Message, MessageDone, ProviderRequest, RunStatus, TextBlock, TextDelta
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import LeaseLostError, ValidationError


class Recording:
    """Answers with the input; records who ran what, when, and how many ran at once per session."""

    capabilities = frozenset({"streaming"})
    models = ()
    default_model = "r-1"

    def __init__(self, name: str, delay: float = 0.01, log: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.delay = delay
        self.log = log if log is not None else []
        self.active: dict[str, int] = defaultdict(int)
        self.overlap = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
        sid = request.metadata["session_id"]
        self.active[sid] += 1
        self.overlap = max(self.overlap, self.active[sid])
        try:
            text = request.messages[-1].content[-1].text
            self.log.append((self.name, text))
            yield TextDelta(text[:2])
            await asyncio.sleep(self.delay)
            yield MessageDone(Message("assistant", (TextBlock(text),)))
        finally:
            self.active[sid] -= 1

    async def aclose(self) -> None:
        pass


def kernel(store: MemoryStore, provider: Any, **runtime: Any) -> Kernel:
    return Kernel({"plugins": {"autoload": False}, "runtime": runtime}, store=store, providers={"r": provider})


async def test_submitted_runs_wait_for_a_worker_and_run_in_session_order() -> None:
    store = MemoryStore()
    log: list[tuple[str, str]] = []
    provider = Recording("w", log=log)
    async with kernel(store, provider) as k:
        sessions = [await k.sessions.create() for _ in range(5)]
        handles = [
            await k.runtime.submit_run(s.id, f"{n}:{i}", execute=False)
            for i in range(4)
            for n, s in enumerate(sessions)
        ]
        await asyncio.sleep(0.05)
        assert all(not h.done() for h in handles) and log == []  # nothing runs without a worker
        worker = k.runtime.worker(concurrency=3)
        task = asyncio.create_task(worker.run())
        results = [await h.result(timeout=10) for h in handles]
        await worker.stop()
        stats = await task
    assert [r.status for r in results] == [RunStatus.COMPLETED] * 20
    assert stats.claimed == stats.completed == 20
    for n in range(5):
        assert [text for _, text in log if text.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(4)]
    assert provider.overlap == 1  # one run at a time per session


async def test_two_workers_share_the_queue_and_never_run_a_run_twice() -> None:
    store = MemoryStore()
    log: list[tuple[str, str]] = []
    a, b = Recording("a", log=log), Recording("b", log=log)
    async with kernel(store, a, worker_id="worker-a") as ka, kernel(store, b, worker_id="worker-b") as kb:
        sessions = [await ka.sessions.create() for _ in range(10)]
        handles = [
            await ka.runtime.submit_run(s.id, f"{n}:{i}", execute=False)
            for i in range(5)
            for n, s in enumerate(sessions)
        ]
        workers = [ka.runtime.worker(concurrency=4, poll=0.02), kb.runtime.worker(concurrency=4, poll=0.02)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        results = [await h.result(timeout=20) for h in handles]
        for w in workers:
            await w.stop()
        await asyncio.gather(*tasks)
    texts = [t for _, t in log]
    assert sorted(texts) == sorted(f"{n}:{i}" for i in range(5) for n in range(10))  # each exactly once
    assert {who for who, _ in log} == {"a", "b"}
    for n in range(10):
        assert [t for t in texts if t.startswith(f"{n}:")] == [f"{n}:{i}" for i in range(5)]
    assert all(r.status is RunStatus.COMPLETED for r in results)
    owners = {r.owner for s in sessions for r in await store.list_runs(session_id=s.id)}
    assert owners == {"worker-a", "worker-b"}


async def test_a_stopping_worker_hands_its_runs_back_to_another() -> None:
    store = MemoryStore()
    slow, fast = Recording("slow", delay=30), Recording("fast")
    async with kernel(store, slow, worker_id="old") as old, kernel(store, fast, worker_id="new") as new:
        session = await old.sessions.create()
        handle = await old.runtime.submit_run(session.id, "long job", execute=False)
        leaving = old.runtime.worker()
        task = asyncio.create_task(leaving.run())
        while not slow.log:
            await asyncio.sleep(0.005)
        await leaving.stop(grace=0)
        stats = await task
        assert stats.handed_back == 1
        first = await handle.result(timeout=5)
        assert first.status is RunStatus.CANCELLED
        (again,) = await new.sessions.runs(session.id, status=RunStatus.PENDING)
        assert again.metadata["asm.handed_back_from"] == first.run_id and again.input == Message.user("long job")
        arriving = new.runtime.worker(poll=0.02)
        task = asyncio.create_task(arriving.run())
        done = await new.runtime.await_run(again.id, timeout=10)
        await arriving.stop()
        await task
    assert done.status is RunStatus.COMPLETED and done.output == "long job"
    cancelled = await store.read(session.id, run_id=first.run_id, types=["run_cancelled"])
    assert cancelled[0].payload["reason"] == "handed back"
    assert (await store.get_run(first.run_id)).lease_expires_at is None  # the lease was released


async def test_a_worker_whose_lease_was_taken_over_stops_at_its_next_write() -> None:
    store = MemoryStore()
    stalled_gate = asyncio.Event()

    class Stalls(Recording):
        async def stream(self, request: ProviderRequest) -> AsyncIterator[Any]:
            yield TextDelta("first part ")
            await stalled_gate.wait()  # the worker stalls long past its lease
            yield TextDelta("second part")
            yield MessageDone(Message.assistant("first part second part"))

    # The stalled worker renews nothing (a heartbeat far beyond its tiny lease): it looks dead.
    stalled = kernel(store, Stalls("stalled"), worker_id="stalled", lease_ttl=0.05, heartbeat_interval=3600)
    rescuer = kernel(store, Recording("rescuer"), worker_id="rescuer", recovery="requeue")
    async with stalled as ks, rescuer as kr:
        session = await ks.sessions.create()
        run_task = asyncio.create_task(ks.sessions.run(session.id, "do it"))
        while not await store.read(session.id, types=["message_streamed"]):
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)  # its lease expires
        report = await kr.runtime.recover()
        assert len(report.crashed) == 1 and len(report.requeued) == 1
        (crashed,) = report.crashed
        stalled_gate.set()
        with pytest.raises(LeaseLostError):
            await run_task
        again = await kr.runtime.await_run(report.requeued[0], timeout=10)
    assert again.status is RunStatus.COMPLETED and again.output == "do it"
    events = await store.read(session.id, run_id=crashed)
    types = [e.type for e in events]
    assert types.count("run_failed") == 1 and "run_completed" not in types
    assert not any(e.payload.get("text") == "second part" for e in events)  # nothing written after the takeover
    record = await store.get_run(crashed)
    assert record.status is RunStatus.FAILED and record.owner == "rescuer"


async def test_bad_worker_settings_are_refused() -> None:
    async with kernel(MemoryStore(), Recording("r")) as k:
        for bad in ({"concurrency": 0}, {"poll": 0}, {"on_stop": "explode"}):
            with pytest.raises(ValidationError):
                k.runtime.worker(**bad)
