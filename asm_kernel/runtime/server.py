"""SessionServer: one session's FIFO run queue.

Runs of a session start in submission order, at most ``max_concurrent_runs`` at a time, and at
most ``max_queued_runs`` wait. Every queued run is already stored as a ``pending`` run, so a
process that stops leaves its queue in the store, where the next start picks it up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from attrs import frozen

from ..errors import AsmError, QueueFullError, RunNotFoundError, StateError
from ..model import RunResult, RunStatus, SessionStatus
from ..pipeline.driver import result_of
from .handle import RunHandle

if TYPE_CHECKING:
    from ..config import RuntimeConfig
    from .supervisor import Supervisor

__all__ = ["RunHandle", "ServerStatus", "SessionServer"]

log = logging.getLogger("asm.runtime")

#: Run metadata key of a run submitted for workers (``execute=False``): local queues leave it.
FOR_WORKERS_KEY = "asm.for_workers"


@frozen
class ServerStatus:
    """One session's run queue now, with its limits."""

    session_id: str
    running: tuple[str, ...]
    queued: tuple[str, ...]
    accepting: bool
    draining: bool
    max_concurrent_runs: int = 1
    max_queued_runs: int = 100
    #: Live ``runtime.subscribe`` streams of the session in this process.
    subscribers: int = 0

    @property
    def idle(self) -> bool:
        return not self.running and not self.queued


class SessionServer:
    """Runs one session's queued runs. Get one from ``kernel.runtime.server(session_id)``."""

    def __init__(self, supervisor: Supervisor, session_id: str, settings: RuntimeConfig) -> None:
        self._supervisor = supervisor
        self._kernel = supervisor.kernel
        self.session_id = session_id
        self.settings = settings
        self._queue: deque[str] = deque()
        self._reserved = 0  # queue places promised to submits still storing their run
        self._handles: dict[str, RunHandle] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True
        self._draining = False
        self._stopping = False
        self._worker: asyncio.Task[None] | None = None
        self._followers: set[asyncio.Task[None]] = set()
        self.last_active = asyncio.get_running_loop().time()

    def __repr__(self) -> str:
        return f"SessionServer({self.session_id!r}, running={len(self._running)}, queued={len(self._queue)})"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._loop(), name=f"asm-session-{self.session_id}")

    async def stop(self, grace: float | None = None) -> None:
        """Stop: accept nothing new; give running runs ``grace`` seconds, then cancel them.

        Queued runs stay ``pending`` in the store and are picked up on the next start.
        """
        self._accepting = False
        self._stopping = True  # start nothing more: the queue stays pending in the store
        if self._running and grace:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        for task in list(self._running.values()):
            task.cancel("shutdown")
        if self._running:
            await asyncio.wait(list(self._running.values()))
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for run_id in list(self._queue):
            self._handles.pop(run_id, None)._fail(  # type: ignore[union-attr]
                StateError(f"run {run_id} was left queued when its server stopped", hint="it runs on next start")
            )
        self._queue.clear()

    async def drain(self, timeout: float | None = None) -> None:
        """Finish what is queued and running, accepting nothing new meanwhile; then accept again."""
        self._accepting = False
        self._draining = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        finally:
            self._draining = False
            self._accepting = not self._stopping

    # -- operations -------------------------------------------------------------------------

    async def submit_run(
        self,
        input: Any,
        *,
        idempotency_key: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        front: bool = False,
        execute: bool = True,
        **options: Any,
    ) -> RunHandle:
        """Queue a run and return its handle at once; a full queue raises QueueFullError.

        ``execute=False`` stores the run for a worker to claim instead of queuing it here.
        """
        if not self._accepting:
            raise StateError(
                f"session {self.session_id} is {'draining' if self._draining else 'stopped'}; it accepts no new runs",
                hint="wait for the drain to finish, then submit again",
            )
        # Validate before anything else: a bad run is refused without touching the queue or store.
        self._kernel.sessions.new_run(
            self.session_id,
            input,
            provider=provider,
            model=model,
            idempotency_key=idempotency_key,
            metadata=metadata,
            options=options,
        )
        if idempotency_key is not None:
            existing = await self._kernel.store.find_run_by_idempotency_key(self.session_id, idempotency_key)
            if existing is not None:
                return self._handle_for_existing(existing)
        # The place is taken before the first await, so concurrent submits cannot all see room.
        if len(self._queue) + self._reserved >= self.settings.max_queued_runs:
            raise QueueFullError(
                f"session {self.session_id} already has {len(self._queue) + self._reserved} queued runs "
                f"(max_queued_runs = {self.settings.max_queued_runs})",
                hint="retry later, or raise runtime.max_queued_runs",
                session_id=self.session_id,
            )
        self._reserved += 1
        try:
            session = await self._kernel.sessions.get(self.session_id)
            if session.status is SessionStatus.PAUSED and self.settings.on_paused == "reject":
                raise StateError(
                    f"session {self.session_id} is paused; runtime.on_paused = 'reject' refuses new runs",
                    hint="resume the session first",
                )
            if not execute:  # marked for the shared queue: a local queue never resumes it
                metadata = {**dict(metadata or {}), FOR_WORKERS_KEY: True}
            run = await self._kernel.sessions.start_run(
                self.session_id,
                input,
                provider=provider,
                model=model,
                idempotency_key=idempotency_key,
                metadata=metadata,
                options=options,
            )
        finally:
            self._reserved -= 1
        if run.status is not RunStatus.PENDING or run.id in self._handles:
            return self._handle_for_existing(run)
        if not execute:
            return self._follower(run.id)
        return self._enqueue(run.id, front=front)

    def _enqueue(self, run_id: str, *, front: bool = False) -> RunHandle:
        existing = self._handles.get(run_id)
        if existing is not None:  # queued or running here already (recovery and resume both saw it)
            return existing
        handle = RunHandle(self.session_id, run_id)
        self._handles[run_id] = handle
        if front:
            self._queue.appendleft(run_id)
        else:
            self._queue.append(run_id)
        self._idle.clear()
        self._wakeup.set()
        return handle

    def _handle_for_existing(self, run: Any) -> RunHandle:
        if run.id in self._handles:
            return self._handles[run.id]
        handle = RunHandle(self.session_id, run.id)
        if run.status.terminal or run.status is RunStatus.AWAITING_APPROVAL:
            handle._resolve(result_of(run))
        elif run.status is RunStatus.PENDING and not self._supervisor.claims_runs:
            return self._enqueue(run.id)
        else:  # running elsewhere (another process): follow it through the store
            return self._follower(run.id)
        return handle

    def _follower(self, run_id: str) -> RunHandle:
        """A handle resolved when the store says the run ended (whoever executes it)."""
        handle = RunHandle(self.session_id, run_id)
        self._handles[run_id] = handle
        self._followers.add(task := asyncio.create_task(self._follow(handle)))
        task.add_done_callback(self._followers.discard)
        return handle

    async def _follow(self, handle: RunHandle) -> None:
        store = self._kernel.store
        cursor = await store.last_seq(self.session_id)
        try:
            while True:
                run = await store.get_run(handle.run_id)
                if run.status.terminal or run.status is RunStatus.AWAITING_APPROVAL:
                    handle._resolve(result_of(run))
                    return
                events = await store.wait(self.session_id, after=cursor, timeout=1.0)
                if events:
                    cursor = events[-1].seq
        except Exception as exc:  # the store failed: the waiter learns it, typed
            handle._fail(exc)
        finally:
            self._handles.pop(handle.run_id, None)

    async def await_run(self, run_id: str, timeout: float | None = None) -> RunResult:
        handle = self._handles.get(run_id)
        if handle is None:
            run = await self._kernel.store.get_run(run_id)
            if run.session_id != self.session_id:
                raise RunNotFoundError(f"run {run_id} belongs to session {run.session_id}, not {self.session_id}")
            if run.status.terminal or run.status is RunStatus.AWAITING_APPROVAL:
                return result_of(run)
            handle = self._handle_for_existing(run)
        return await handle.result(timeout)

    async def execute_run(self, input: Any, **kwargs: Any) -> RunResult:
        """Submit and wait for the result."""
        handle = await self.submit_run(input, **kwargs)
        return await handle.result()

    async def cancel_run(self, run_id: str, reason: str = "cancelled") -> RunResult:
        """Cancel a queued or running run; cancelling a finished run is refused."""
        if run_id in self._queue:
            self._queue.remove(run_id)
            result = await self._kernel.sessions.cancel_pending(run_id, reason)
            self._handles.pop(run_id)._resolve(result)
            self._check_idle()
            return result
        task = self._running.get(run_id)
        if task is not None:
            handle = self._handles[run_id]
            task.cancel(reason)
            return await handle.result()
        run = await self._kernel.store.get_run(run_id)
        if run.status.terminal:
            raise StateError(f"run {run_id} already ended {run.status.value}", hint="there is nothing to cancel")
        if run.status is RunStatus.PENDING and run.session_id == self.session_id:
            return await self._kernel.sessions.cancel_pending(run_id, reason)
        if run.status is RunStatus.AWAITING_APPROVAL and run.session_id == self.session_id:
            result = await self._kernel.sessions.cancel_waiting(run_id, reason)
            self.wake()  # the run held its session's place in the queue
            return result
        raise StateError(f"run {run_id} is not queued or running in this process")

    async def interrupt_run(self, input: Any, **kwargs: Any) -> RunHandle:
        """Cancel what is running and run ``input`` next, ahead of anything queued."""
        handle = await self.submit_run(input, front=True, **kwargs)
        for run_id, task in list(self._running.items()):
            task.cancel("interrupted")
            await self._handles[run_id].result()
        return handle

    def status(self) -> ServerStatus:
        return ServerStatus(
            session_id=self.session_id,
            running=tuple(self._running),
            queued=tuple(self._queue),
            accepting=self._accepting,
            draining=self._draining,
            max_concurrent_runs=self.settings.max_concurrent_runs,
            max_queued_runs=self.settings.max_queued_runs,
            subscribers=self._supervisor.subscribers(self.session_id),
        )

    def wake(self) -> None:
        """Re-check the queue (the session was resumed, a slot was freed, ...)."""
        self._wakeup.set()

    # -- the worker -------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if not self._queue and not self._running:
            self._idle.set()
            self.last_active = asyncio.get_running_loop().time()

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._start_what_fits()
            except Exception:  # e.g. the store is briefly unavailable: keep the queue, retry
                log.exception("session %s: could not start queued runs; retrying", self.session_id)
                await asyncio.sleep(1.0)
                self._wakeup.set()

    async def _start_what_fits(self) -> None:
        limiter = self._supervisor.limiter
        while self._queue and not self._stopping and len(self._running) < self.settings.max_concurrent_runs:
            session = await self._kernel.sessions.get(self.session_id)
            if session.status is SessionStatus.PAUSED:
                break  # resumed later through wake()
            # A run waiting for approval holds its place as a running one does: the runs queued
            # behind it wait, so their messages cannot split its tool calls from their results.
            waiting = await self._kernel.store.list_runs(
                session_id=self.session_id, status=RunStatus.AWAITING_APPROVAL, limit=self.settings.max_concurrent_runs
            )
            if len(self._running) + len(waiting) >= self.settings.max_concurrent_runs:
                break  # woken when a decision queues the waiting run again, or it is cancelled
            if session.status.terminal:
                for run_id in list(self._queue):
                    await self.cancel_run(run_id, reason=f"session {session.status.value}")
                break
            await limiter.acquire()
            if not self._queue:  # cancelled while we waited for a slot
                limiter.release()
                break
            run_id = self._queue.popleft()
            self._running[run_id] = asyncio.create_task(self._execute(run_id), name=f"asm-run-{run_id}")
        self._check_idle()

    async def _execute(self, run_id: str) -> None:
        handle = self._handles[run_id]
        requeue = follow = False
        try:
            result = await self._kernel.sessions.execute(run_id, raise_on_error=False)
            handle._resolve(result)
        except asyncio.CancelledError:
            # Cancelled by cancel_run/interrupt/shutdown: the terminal unit is stored already.
            try:
                handle._resolve(result_of(await self._kernel.store.get_run(run_id)))
            except Exception as exc:
                handle._fail(exc)
        except StateError as exc:
            # Paused between the queue and the start: a paused session keeps it queued. Started
            # by another worker meanwhile (a shared store): follow it there.
            session = await self._kernel.sessions.get(self.session_id)
            run = await self._kernel.store.get_run(run_id)
            requeue = session.status is SessionStatus.PAUSED and run.status is RunStatus.PENDING
            follow = not requeue and run.status is not RunStatus.PENDING
            if not requeue and not follow:
                handle._fail(exc)
        except AsmError as exc:
            # The outcome could not be stored, or another worker took the run over: say so, typed,
            # instead of resolving with a record that still says "running".
            log.warning("run %s: %s", run_id, exc)
            handle._fail(exc)
        except Exception as exc:  # pragma: no cover - a bug in asm
            log.exception("run %s crashed", run_id)
            handle._fail(exc)
        finally:
            self._supervisor.limiter.release()
            self._running.pop(run_id, None)
            if requeue:
                self._queue.appendleft(run_id)
            elif follow:
                self._followers.add(task := asyncio.create_task(self._follow(handle)))
                task.add_done_callback(self._followers.discard)
            else:
                self._handles.pop(run_id, None)
            self._check_idle()
            self._wakeup.set()
