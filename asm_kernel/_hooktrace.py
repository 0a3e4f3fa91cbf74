"""``ASM_TRACE_HOOKS=1``: every hook call logged on ``asm.hooks`` (pluggy's call monitoring)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

__all__ = ["trace_hooks"]

trace_log = logging.getLogger("asm.hooks")


def trace_hooks(pm: pluggy.PluginManager) -> None:
    """``ASM_TRACE_HOOKS=1``: log every hook call and its result (pluggy's call monitoring)."""
    if not trace_log.handlers and not logging.getLogger().handlers:
        from .secrets import RedactingFilter

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("asm: trace: %(message)s"))
        handler.addFilter(RedactingFilter())
        trace_log.addHandler(handler)
    trace_log.setLevel(logging.DEBUG)

    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        names = ", ".join(i.plugin_name for i in impls) or "no implementation"
        trace_log.debug("%s(%s) -> %s", hook_name, ", ".join(sorted(kwargs)), names)

    def after(
        outcome: pluggy.Result[Any], hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        if outcome.exception is not None:
            trace_log.debug("%s raised %s", hook_name, type(outcome.exception).__name__)

    pm.add_hookcall_monitoring(before, after)
