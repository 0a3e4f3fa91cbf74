"""A durable test store: the memory store, saved to a file after every write (``use = "saved"``).

For tests that need a store to outlive a process (approval across a restart, the CLI across
invocations) while the DuckDB store is being upgraded to the v2 contract in another branch. One
process writes it at a time (like an embedded file store); others read the last save.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import attrs

from asm_kernel import hookimpl
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.writes import StoreCapabilities

_STATE = ("_sessions", "_runs", "_session_runs", "_logs", "_by_id")


@attrs.frozen
class SavedSettings:
    path: str = "store.pickle"


class SavedStore(MemoryStore):
    capabilities = StoreCapabilities(shared=False, durable=True, durability="safe", leases=True)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def open(self) -> None:
        await super().open()
        if self.path.exists():
            state = pickle.loads(self.path.read_bytes())
            with self._lock:
                for name in _STATE:
                    setattr(self, name, state[name])

    def _save(self) -> None:
        with self._lock:
            data = pickle.dumps({name: getattr(self, name) for name in _STATE})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    async def commit(self, unit: Any) -> Any:
        try:
            return await super().commit(unit)
        finally:
            self._save()

    async def claim_runs(self, owner: str, **kwargs: Any) -> Any:
        try:
            return await super().claim_runs(owner, **kwargs)
        finally:
            self._save()

    async def renew_leases(self, fences: Any, ttl: float) -> Any:
        try:
            return await super().renew_leases(fences, ttl)
        finally:
            self._save()


@hookimpl
def asm_register_stores(register: Any) -> None:
    register("saved", lambda s, ctx: SavedStore(Path(ctx.config_dir) / s.path), settings=SavedSettings)
