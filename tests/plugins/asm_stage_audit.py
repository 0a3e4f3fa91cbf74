"""A third-party plugin that extends the run pipeline without touching kernel files.

* wraps the ``context`` stage so e-mail addresses never leave the process: the provider sees
  ``[email]`` while the stored log keeps what the user wrote;
* adds an ``audit`` stage after ``call`` that records every model call as an ``audit.model_call``
  event (provider, stop reason, tokens), stored with the run's next write;
* adds a ``quota`` stage before ``start`` that refuses runs of a blocked agent.

Loaded in the tests through ``[plugins] modules = ["asm_stage_audit"]``.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from asm_kernel import Message, TextBlock, hookimpl
from asm_kernel.errors import PolicyError

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
BLOCKED_AGENTS = {"blocked"}


def _mask(message: Message) -> Message:
    blocks = tuple(TextBlock(EMAIL.sub("[email]", b.text)) if isinstance(b, TextBlock) else b for b in message.content)
    return attrs.evolve(message, content=blocks)


async def mask_emails(state: Any, proceed: Any) -> None:
    await proceed()  # the builtin context stage sets state.messages from the log
    state.messages = [_mask(m) for m in state.messages]


async def audit(state: Any) -> None:
    response = state.response
    state.defer(
        "audit.model_call",
        {
            "turn": state.turn,
            "provider": state.provider_name,
            "stop_reason": response.stop_reason if response else None,
            "total_tokens": state.usage.total_tokens,
        },
    )


async def quota(state: Any) -> None:
    if state.session.agent_id in BLOCKED_AGENTS:
        raise PolicyError(f"agent {state.session.agent_id!r} may not start runs", hint="ask an admin")


@hookimpl
def asm_configure_pipeline(pipeline: Any, kernel: Any) -> None:
    pipeline.wrap("context", mask_emails)
    pipeline.add("audit", audit, after="call")
    pipeline.add("quota", quota, before="start")
