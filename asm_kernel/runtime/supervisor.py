"""Supervisor: the session servers of one process, global limits, recovery and subscriptions.

Reached as ``kernel.runtime``. It starts on first use (or ``await kernel.runtime.start()``):

1. **recovery** — runs left ``running`` whose lease expired (their process is gone) are closed
   with ``run_failed`` (reason ``crashed``); with ``runtime.recovery = "requeue"`` a new pending
   run with the same input is queued, at most ``max_recovery_attempts`` times per original run
   (see :mod:`asm_kernel.recovery`). A live run of another process is never touched. Recovery
   runs again every ``runtime.lease_ttl`` seconds while the runtime is up, so a worker that dies
   is noticed by the others;
2. **resume** — runs left ``pending`` (queued when the last process stopped) are queued again,
   oldest first, in their sessions' servers (a store shared by several processes leaves them to
   the workers that claim runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import hookimpl
from ..errors import LimitExceededError, StoreCorruptError, ValidationError
from ..model import Event, Run, RunResult, RunStatus, SessionStatus
from ..recovery import RecoveryReport, RepairReport, recover_expired, repair_all
from .limiter import ConcurrencyLimiter
from .server import FOR_WORKERS_KEY, RunHandle, ServerStatus, SessionServer
from .worker import Worker

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = ["Supervisor", "RecoveryReport"]

log = logging.getLogger("asm.runtime")

_PAGE = 500


class _TransitionListener:
    """Wakes a session's server when the session changes status (resume after a handoff)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    @hookimpl
    def asm_session_transition(self, session: Any, new_status: SessionStatus) -> None:
        server = self._supervisor.lookup(session.id)
        if server is not None:
            server.wake()


class Supervisor:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.settings = kernel.config.runtime
        self.limiter = ConcurrencyLimiter(self.settings.max_running_runs)
        self._servers: dict[str, SessionServer] = {}
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._subscribers: dict[str, int] = {}
        self._workers: set[Worker] = set()
        self.last_recovery = RecoveryReport()
        kernel.plugins.register_object(_TransitionListener(self), "builtin.runtime", source="builtin")

    def __repr__(self) -> str:
        return f"Supervisor(servers={len(self._servers)}, running={self.limiter.running})"

    # -- start and stop ---------------------------------------------------------------------

    async def start(self) -> RecoveryReport:
        """Recover crashed runs and resume pending ones (once); later calls are no-ops."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return self.last_recovery
            self._started = True
            recovered = await recover_expired(self.kernel)
            await self._expire_approvals()
            resumed = await self._resume_pending()
            self.last_recovery = RecoveryReport(
                recovered.crashed, recovered.requeued, tuple(resumed), recovered.repaired
            )
            self._reaper = asyncio.create_task(self._reap_idle(), name="asm-runtime-reaper")
            return self.last_recovery

    async def recover(self) -> RecoveryReport:
        """Close runs whose lease expired now (the runtime also does it every ``lease_ttl``)."""
        report = await recover_expired(self.kernel)
        for run_id in report.requeued:
            run = await self.kernel.store.get_run(run_id)
            (await self._server(run.session_id, start=True))._enqueue(run_id)
        return report

    async def repair(self) -> RepairReport:
        """Check every run's record against its log and mend what disagrees (:mod:`asm_kernel.recovery`)."""
        return await repair_all(self.kernel)

    async def _expire_approvals(self) -> None:
        try:
            await self.kernel.approvals.expire()
        except Exception as exc:  # the store may be briefly down: next round
            log.warning("expiring approval requests failed: %s", exc)

    @property
    def claims_runs(self) -> bool:
        """Whether pending runs are taken from the store by workers (shared store, or workers here)."""
        return bool(self._workers) or self.kernel.store.capabilities.shared

    async def resume(self, run: Run) -> None:
        """A run decided after waiting for approval is pending again: run it here, or wake a worker.

        In a process whose runtime is started on a store no other process writes, the run goes
        to the front of its session's queue (it was there first). On a shared store, the
        workers that claim runs take it; with no runtime started, whoever starts one (or calls
        ``kernel.sessions.execute``) continues it.
        """
        for worker in self._workers:
            worker.wake()
        if not self._started or self.claims_runs:
            return
        server = await self._server(run.session_id)
        server._enqueue(run.id, front=True)

    def worker(self, *, concurrency: int | None = None, poll: float = 0.5, on_stop: str = "requeue") -> Worker:
        """A :class:`~asm_kernel.runtime.worker.Worker` executing runs queued by any process.

        ``await worker.run()`` until ``await worker.stop()``; see :mod:`asm_kernel.runtime.worker`.
        """
        return Worker(self, concurrency=concurrency, poll=poll, on_stop=on_stop)  # type: ignore[arg-type]

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop every server: running runs get ``grace`` seconds, queued ones stay pending."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        grace = self.settings.shutdown_grace if grace is None else grace
        await asyncio.gather(*(w.stop(grace) for w in list(self._workers)), return_exceptions=True)
        servers = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(s.stop(grace) for s in servers), return_exceptions=True)
        self._started = False

    async def _all_runs(self, status: RunStatus) -> list[Run]:
        found: list[Run] = []
        while True:
            page = await self.kernel.store.list_runs(status=status, limit=_PAGE, offset=len(found))
            found.extend(page)
            if len(page) < _PAGE:
                return found

    async def _resume_pending(self) -> list[str]:
        if self.kernel.store.capabilities.shared:
            return []  # other processes queue them too: claiming is the workers' job
        pending = sorted(await self._all_runs(RunStatus.PENDING), key=lambda r: (r.created_at, r.id))
        resumed = []
        for run in pending:
            if run.metadata.get(FOR_WORKERS_KEY):
                continue  # submitted for workers: executing it here would race them
            server = await self._server(run.session_id, start=False)
            server._enqueue(run.id)
            resumed.append(run.id)
        return resumed

    async def _reap_idle(self) -> None:
        interval = max(0.05, min(self.settings.idle_timeout / 2, self.settings.lease_ttl, 30.0))
        loop = asyncio.get_running_loop()
        next_recovery = loop.time() + self.settings.lease_ttl
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for sid, server in list(self._servers.items()):
                if server.status().idle and now - server.last_active >= self.settings.idle_timeout:
                    await self.stop_server(sid)
            if now >= next_recovery:
                next_recovery = now + self.settings.lease_ttl
                try:
                    await self.recover()
                except Exception as exc:  # the store may be briefly down: next round
                    log.warning("periodic recovery failed: %s", exc)
                await self._expire_approvals()

    # -- servers ----------------------------------------------------------------------------

    def lookup(self, session_id: str) -> SessionServer | None:
        """The running server of a session, if there is one."""
        return self._servers.get(session_id)

    async def server(self, session_id: str) -> SessionServer:
        """Get or start the server of ``session_id`` (the session must exist)."""
        await self.start()
        return await self._server(session_id)

    async def _server(self, session_id: str, start: bool = True) -> SessionServer:
        server = self._servers.get(session_id)
        if server is not None:
            return server
        await self.kernel.sessions.get(session_id)  # unknown ids raise SessionNotFoundError
        if len(self._servers) >= self.settings.max_active_sessions:
            for sid, other in list(self._servers.items()):
                if other.status().idle:
                    await self.stop_server(sid)
                    break
            else:
                raise LimitExceededError(
                    f"{len(self._servers)} sessions are active in this process "
                    f"(runtime.max_active_sessions = {self.settings.max_active_sessions})",
                    hint="retry when some finish, or raise runtime.max_active_sessions",
                )
        server = self._servers.get(session_id)  # another task may have made it meanwhile
        if server is None:
            server = self._servers[session_id] = SessionServer(self, session_id, self.settings)
            server.start()
        return server

    async def stop_server(self, session_id: str) -> None:
        server = self._servers.pop(session_id, None)
        if server is not None:
            await server.stop(self.settings.shutdown_grace)

    def servers(self) -> list[ServerStatus]:
        return [s.status() for s in self._servers.values()]

    # -- operations by id -------------------------------------------------------------------

    async def submit_run(self, session_id: str, input: Any, *, execute: bool = True, **kwargs: Any) -> RunHandle:
        """Queue a run in the session; returns its handle at once.

        With ``execute=False`` the run is only stored ``pending``: a worker (``asm worker``, in
        this process or any other sharing the store) claims and executes it; the handle follows
        it through the store.
        """
        handle = await (await self.server(session_id)).submit_run(input, execute=execute, **kwargs)
        if not execute:
            for worker in self._workers:
                worker.wake()
        return handle

    async def execute_run(self, session_id: str, input: Any, **kwargs: Any) -> RunResult:
        """Queue a run and wait for its result."""
        return await (await self.server(session_id)).execute_run(input, **kwargs)

    async def await_run(self, run_id: str, timeout: float | None = None) -> RunResult:
        run = await self.kernel.store.get_run(run_id)
        return await (await self.server(run.session_id)).await_run(run_id, timeout)

    async def cancel_run(self, run_id: str, reason: str = "cancelled") -> RunResult:
        run = await self.kernel.store.get_run(run_id)
        return await (await self.server(run.session_id)).cancel_run(run_id, reason)

    async def interrupt_run(self, session_id: str, input: Any, **kwargs: Any) -> RunHandle:
        return await (await self.server(session_id)).interrupt_run(input, **kwargs)

    async def status(self, session_id: str) -> ServerStatus:
        server = self.lookup(session_id)
        if server is None:
            await self.kernel.sessions.get(session_id)
            return ServerStatus(
                session_id,
                (),
                (),
                accepting=True,
                draining=False,
                max_concurrent_runs=self.settings.max_concurrent_runs,
                max_queued_runs=self.settings.max_queued_runs,
                subscribers=self.subscribers(session_id),
            )
        return server.status()

    def subscribers(self, session_id: str) -> int:
        """Live :meth:`subscribe` streams of the session in this process."""
        return self._subscribers.get(session_id, 0)

    async def drain(self, session_id: str, timeout: float | None = None) -> None:
        server = self.lookup(session_id)
        if server is not None:
            await server.drain(timeout)

    # -- following a session ----------------------------------------------------------------

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        """Long-poll: events after ``after``, waiting up to ``timeout`` seconds for the first."""
        if not isinstance(timeout, int | float) or timeout < 0:
            raise ValidationError(f"timeout must be >= 0 seconds, got {timeout!r}", path="timeout")
        await self.kernel.sessions.get(session_id)
        return await self.kernel.store.wait(session_id, after=after, timeout=timeout)

    async def subscribe(
        self,
        session_id: str,
        *,
        after: int = 0,
        poll: float = 1.0,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Every event after ``after``: the stored ones first, then new ones as they arrive.

        The switch from replay to live is seamless (no gap, no duplicate) because both come from
        the store by seq; a consumer that reconnects with its last seq misses nothing. ``types``
        and ``run_id`` keep only matching events (the cursor still moves over the others).
        ``poll`` bounds how long one wait lasts, so appends made by other processes are seen too.
        """
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValidationError(f"after must be an integer >= 0, got {after!r:.40}", path="after")
        if isinstance(types, str) or (types is not None and not all(isinstance(t, str) for t in types)):
            raise ValidationError("types must be a list of event type names", path="types")
        if run_id is not None and not isinstance(run_id, str):
            raise ValidationError("run_id must be a string", path="run_id")
        await self.kernel.sessions.get(session_id)
        wanted = frozenset(types) if types else None
        cursor = after
        self._subscribers[session_id] = self._subscribers.get(session_id, 0) + 1
        try:
            while True:
                events = await self.kernel.store.wait(session_id, after=cursor, timeout=poll)
                for event in events:
                    if event.seq != cursor + 1:  # the store contract makes this impossible
                        raise StoreCorruptError(
                            f"session {session_id} has a gap in its log: seq {cursor} is followed by {event.seq}",
                            hint="the store broke its contract; check it with its conformance suite",
                        )
                    cursor = event.seq
                    if (wanted is None or event.type in wanted) and (run_id is None or event.run_id == run_id):
                        yield event
        finally:
            left = self._subscribers.get(session_id, 1) - 1
            if left:
                self._subscribers[session_id] = left
            else:
                self._subscribers.pop(session_id, None)
