"""Conformance through a real kernel: a fault at every write of a run, and cancels at any point.

Whatever write fails — refused, applied with its answer lost, or the store down from there on
until it heals — the caller gets a result or a typed :class:`~asm_kernel.errors.StorageError`
(never an ``AssertionError`` or a raw exception), every event the caller was shown is stored with
the seq it was shown with, each run has exactly the terminal event its record says, and no run of
the live process is left ``running``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ..errors import AsmError, StorageError
from ..model import Event, RunResult, RunStatus, ToolSpec
from ._store_base import StoreTestBase
from .faults import FaultMode, FaultyStore

_TERMINAL = {
    RunStatus.COMPLETED: "run_completed",
    RunStatus.FAILED: "run_failed",
    RunStatus.CANCELLED: "run_cancelled",
    RunStatus.TIMED_OUT: "run_timed_out",
}
_TURNS: list[list[dict[str, Any]]] = [
    [
        {"text": "Let me look that up. "},
        {"tool_use": {"name": "lookup", "input": {"q": "order 1234"}, "id": "tu_1"}},
        {"usage": {"input_tokens": 20, "output_tokens": 9}},
    ],
    [{"text": "Your order ships tomorrow, by courier."}, {"usage": {"input_tokens": 40, "output_tokens": 8}}],
]


class _Lookup:
    spec = ToolSpec("lookup", "Look an order up.", {"type": "object", "properties": {"q": {"type": "string"}}})

    async def __call__(self, input: dict[str, Any]) -> str:
        return f"found {input.get('q')}: shipping tomorrow"


def _kernel(store: Any) -> Any:
    from ..builtin.scripted import ScriptedProvider, ScriptedSettings
    from ..kernel import Kernel

    provider = ScriptedProvider(settings=ScriptedSettings(turns=_TURNS, chunk_size=8), name="scripted")
    kernel = Kernel({"plugins": {"autoload": False}}, store=store, providers={"scripted": provider}, tools=[_Lookup()])
    kernel.sessions.commit_backoff = 0.0  # retries are part of what is tested, not their waiting
    return kernel


async def assert_record_and_log_agree(store: Any, session_id: str, acked: Sequence[Event] = ()) -> None:
    """The invariants of the store contract v2 for one session (see the module docstring)."""
    log = await store.read(session_id)
    assert [e.seq for e in log] == list(range(1, len(log) + 1)), "the log has a gap"
    by_id = {e.id: e for e in log}
    for event in acked:
        assert event.id in by_id, f"acknowledged event {event.type} (seq {event.seq}) was lost"
        assert by_id[event.id].seq == event.seq, f"acknowledged event {event.id} changed its seq"
    runs = {r.id: r for r in await store.list_runs(session_id=session_id, limit=1000)}
    for event in log:
        if event.run_id is not None and event.type in ("run_started", *_TERMINAL.values()):
            assert event.run_id in runs, f"{event.type} of run {event.run_id}, which has no record"
    for run in runs.values():
        ends = [e.type for e in log if e.run_id == run.id and e.type in _TERMINAL.values()]
        assert run.status is not RunStatus.RUNNING, f"run {run.id} was left running by a live process"
        if run.status.terminal:
            assert ends == [_TERMINAL[run.status]], f"run {run.id} is {run.status.value} but its log ends {ends}"
        else:
            assert ends == [], f"run {run.id} is {run.status.value} but its log ends {ends}"


class StoreFaultTests(StoreTestBase):
    #: Write-fault modes exercised at every write of a run.
    fault_modes: tuple[FaultMode, ...] = ("before", "after", "down")

    def _drill(self, make_store: Callable[[], Any], path: str) -> None:
        async def body(store: Any) -> None:
            faulty = FaultyStore(store, close_inner=False)
            # A clean run first: how many writes does one run make?
            kernel = _kernel(faulty)
            async with kernel:
                session = await kernel.sessions.create()
                faulty.arm(10**9)
                await _run(kernel, session.id, path)
                writes = faulty.writes
            assert writes >= 2
            for mode in self.fault_modes:
                for n in range(1, writes + 2):
                    kernel = _kernel(faulty)
                    async with kernel:
                        session = await kernel.sessions.create()
                        faulty.arm(n, mode)
                        acked: list[Event] = []
                        try:
                            await _run(kernel, session.id, path, acked)
                        except AsmError as exc:
                            assert isinstance(exc, StorageError), (mode, n, exc)
                        faulty.heal()
                        await kernel.sessions.closer.flush()
                        assert len(kernel.sessions.closer) == 0
                        await assert_record_and_log_agree(store, session.id, acked)

        self._with_store(make_store, body)

    def test_a_fault_at_any_write_of_a_run_leaves_record_and_log_agreeing(self, make_store: Callable[[], Any]) -> None:
        self._drill(make_store, "direct")

    def test_a_fault_at_any_write_of_a_queued_run_leaves_record_and_log_agreeing(
        self, make_store: Callable[[], Any]
    ) -> None:
        self._drill(make_store, "runtime")

    @pytest.mark.parametrize("spins", [0, 1, 2, 3, 5, 8, 13, 21, 34, 55])
    def test_a_cancel_at_any_point_ends_the_run_once(self, make_store: Callable[[], Any], spins: int) -> None:
        """Cancel after ``spins`` turns of the event loop: before, during and after the run."""

        async def body(store: Any) -> None:
            kernel = _kernel(FaultyStore(store, close_inner=False))
            async with kernel:
                session = await kernel.sessions.create()
                seen: list[Event] = []

                async def consume() -> None:
                    async for item in kernel.sessions.stream_run(session.id, "where is my order?"):
                        if isinstance(item, Event):
                            seen.append(item)

                task = asyncio.create_task(consume())
                for _ in range(spins):
                    await asyncio.sleep(0)
                task.cancel("drill")
                await asyncio.sleep(0)
                task.cancel("drill again")  # a second cancel during clean-up changes nothing
                await asyncio.gather(task, return_exceptions=True)
                await assert_record_and_log_agree(store, session.id, seen)
                runs = await store.list_runs(session_id=session.id)
                assert len(runs) <= 1
                for run in runs:
                    assert run.status in (RunStatus.CANCELLED, RunStatus.COMPLETED)

        self._with_store(make_store, body)


async def _run(kernel: Any, session_id: str, path: str, acked: list[Event] | None = None) -> RunResult:
    if path == "runtime":
        return await kernel.runtime.execute_run(session_id, "where is my order?")  # type: ignore[no-any-return]
    result: RunResult | None = None
    async for item in kernel.sessions.stream_run(session_id, "where is my order?", raise_on_error=False):
        if isinstance(item, RunResult):
            result = item
        elif acked is not None:
            acked.append(item)
    assert result is not None
    return result
