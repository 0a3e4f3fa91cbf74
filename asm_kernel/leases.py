"""The lease keeper: this process renews the leases of the runs it executes.

Each running run holds a lease (owner = this kernel's ``worker_id``, a fencing token, an expiry
judged by the store's clock). One task per kernel renews every held lease in one store call each
``runtime.heartbeat_interval`` (default ``lease_ttl / 3``). A lease the store reports lost — the
run was taken over after this process failed to renew in time — cancels that run's execution at
once; its fenced writes would be refused anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .model import Fence, Run

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["LeaseKeeper"]

log = logging.getLogger("asm.leases")


class LeaseKeeper:
    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._held: dict[str, tuple[Fence, Callable[[], None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"LeaseKeeper(held={len(self._held)})"

    def __len__(self) -> int:
        return len(self._held)

    def held(self) -> list[Fence]:
        return [fence for fence, _ in self._held.values()]

    @property
    def interval(self) -> float:
        runtime = self._kernel.config.runtime
        return runtime.heartbeat_interval or runtime.lease_ttl / 3

    def hold(self, run: Run, on_lost: Callable[[], None]) -> None:
        """Keep renewing ``run``'s lease until :meth:`release`; ``on_lost`` runs if it is lost."""
        fence = run.lease
        if fence is None:
            return
        self._held[run.id] = (fence, on_lost)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._beat(), name="asm-lease-keeper")

    def release(self, run_id: str) -> None:
        self._held.pop(run_id, None)

    async def renew(self) -> list[str]:
        """Renew every held lease now; returns the runs whose lease was lost (already told)."""
        if not self._held:
            return []
        fences = self.held()
        lost = await self._kernel.store.renew_leases(fences, self._kernel.config.runtime.lease_ttl)
        for run_id in lost:
            entry = self._held.pop(run_id, None)
            if entry is not None:
                log.warning("run %s: lease lost to another worker; stopping it", run_id)
                entry[1]()
        return lost

    async def _beat(self) -> None:
        while self._held:
            await asyncio.sleep(self.interval)
            try:
                await self.renew()
            except Exception as exc:  # a store hiccup: the next beat tries again
                log.warning("renewing %d run lease(s) failed: %s", len(self._held), exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
