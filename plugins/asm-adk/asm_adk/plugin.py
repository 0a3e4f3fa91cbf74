"""Entry point of the ``asm-adk`` plugin.

Thin on purpose: it imports neither ADK nor the service module. The adapter is
used from application code (``AsmSessionService(kernel)``); the plugin's one hook drops the
adapter's in-memory views of a kernel's sessions and state scopes when that kernel stops, so a kernel reopened on
the same store always reads the log afresh.
"""

from __future__ import annotations

from typing import Any

import asm_kernel

from ._view import forget


@asm_kernel.hookimpl
def asm_kernel_stopping(kernel: Any) -> None:
    forget(kernel)
