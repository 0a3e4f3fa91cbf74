"""The worker: executes runs queued in the store by any process (``asm worker``).

Web processes submit runs with ``kernel.runtime.submit_run(..., execute=False)`` (or
``asm submit``): the run is stored ``pending`` and nothing executes it there. Workers — in any
number of processes on any number of machines sharing a store — loop: claim queued runs with
``store.claim_runs`` (per-session FIFO, at most ``runtime.max_concurrent_runs`` per session across
all workers, a claim is a lease so two workers never take the same run), execute each through
the pipeline (whose start unit is conditional on the claim's token), and claim again as slots
free up. A worker that dies leaves leases nobody renews; another worker's recovery closes (or
requeues) those runs once they expire.

Stopping (:meth:`Worker.stop`, or SIGTERM for ``asm worker``): claim nothing more, give in-flight
runs ``grace`` seconds, then — per ``on_stop`` — cancel them (``"cancel"``: they end
``cancelled``) or hand them back (``"requeue"``: they end ``cancelled`` with reason ``handed
back`` and a new pending run with the same input is queued in the same unit, for another worker).
Leases are released either way, so a rolling restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

from attrs import define

from ..errors import AsmError, StateError, ValidationError
from ..model import RunResult

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger("asm.worker")

OnStop = Literal["cancel", "requeue"]
HANDED_BACK = "handed back"


@define
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    handed_back: int = 0


class Worker:
    """Claims and executes queued runs until stopped. Get one from ``kernel.runtime.worker()``."""

    def __init__(
        self,
        supervisor: Supervisor,
        *,
        concurrency: int | None = None,
        poll: float = 0.5,
        on_stop: OnStop = "requeue",
    ) -> None:
        settings = supervisor.settings
        concurrency = settings.max_running_runs if concurrency is None else concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValidationError(f"concurrency must be an integer >= 1, got {concurrency!r}", path="concurrency")
        if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
            raise ValidationError(f"poll must be a positive number of seconds, got {poll!r}", path="poll")
        if on_stop not in ("cancel", "requeue"):
            raise ValidationError(f"on_stop must be 'cancel' or 'requeue', got {on_stop!r}", path="on_stop")
        self._supervisor = supervisor
        self._kernel = supervisor.kernel
        self.concurrency = concurrency
        self.poll = poll
        self.on_stop: OnStop = on_stop
        self.stats = WorkerStats()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"Worker(owner={self._kernel.worker_id!r}, running={len(self._running)}, {self.stats})"

    @property
    def running(self) -> tuple[str, ...]:
        return tuple(self._running)

    def wake(self) -> None:
        """Claim now instead of at the next poll (a run was just submitted in this process)."""
        self._wake.set()

    async def run(self) -> WorkerStats:
        """Claim and execute until :meth:`stop`; returns what it did."""
        await self._supervisor.start()
        self._supervisor._workers.add(self)
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._running)
                claimed = await self._claim(free) if free > 0 else 0
                if claimed and len(self._running) < self.concurrency:
                    continue  # there may be more waiting: claim again at once
                self._wake.clear()
                waits = [asyncio.ensure_future(self._stopping.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=self.poll, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            self._supervisor._workers.discard(self)
        return self.stats

    async def _claim(self, limit: int) -> int:
        settings = self._supervisor.settings
        try:
            runs = await self._kernel.store.claim_runs(
                self._kernel.worker_id,
                limit=limit,
                lease_ttl=settings.lease_ttl,
                max_running_per_session=settings.max_concurrent_runs,
            )
        except AsmError as exc:  # the store is briefly away: try again at the next poll
            log.warning("claiming runs failed: %s", exc)
            return 0
        for run in runs:
            self.stats.claimed += 1
            self._running[run.id] = asyncio.create_task(self._execute(run.id), name=f"asm-worker-run-{run.id}")
        return len(runs)

    async def _execute(self, run_id: str) -> None:
        limiter = self._supervisor.limiter
        await limiter.acquire()
        try:
            result: RunResult = await self._kernel.sessions.execute(run_id, raise_on_error=False)
            if result.status.value == "completed":
                self.stats.completed += 1
            else:
                self.stats.failed += 1
        except asyncio.CancelledError:
            pass  # stopped: the run's terminal unit (or hand-back) is already stored
        except StateError as exc:
            log.info("run %s was not ours to execute after all: %s", run_id, exc)
        except AsmError as exc:
            self.stats.failed += 1
            log.warning("run %s: %s", run_id, exc)
        finally:
            limiter.release()
            self._running.pop(run_id, None)

    async def stop(self, grace: float | None = None) -> None:
        """Claim nothing more; give in-flight runs ``grace`` seconds, then cancel or hand them back."""
        self._stopping.set()
        grace = self._supervisor.settings.shutdown_grace if grace is None else grace
        if self._running and grace:
            await asyncio.wait(list(self._running.values()), timeout=grace)
        reason = HANDED_BACK if self.on_stop == "requeue" else "worker stopped"
        for run_id, task in list(self._running.items()):
            if self.on_stop == "requeue":
                self._kernel.sessions.hand_back.add(run_id)
                self.stats.handed_back += 1
            task.cancel(reason)
        if self._running:
            await asyncio.wait(list(self._running.values()))
