"""A store that outlives each `asm` invocation of one test process: every kernel built in the
process gets the same MemoryStore, so in-process CLI tests can chain commands on one log.

Loaded in the tests through ``[plugins] modules = ["asm_shared_memory"]`` with
``[store] use = "shared-memory"``.
"""

from __future__ import annotations

from typing import Any

from asm_kernel import hookimpl
from asm_kernel.builtin.memory import MemoryStore

STORE = MemoryStore()


@hookimpl
def asm_register_stores(register: Any) -> None:
    register("shared-memory", lambda settings, context: STORE, description="one memory store per test process")
