"""asm-openai-agents: an OpenAI Agents SDK ``Session`` whose history is an asm event log.

>>> from asm_openai_agents import AsmSession              # doctest: +SKIP
>>> session = AsmSession("user-42", kernel)                # kernel: a started asm_kernel.Kernel
>>> await Runner.run(agent, "hello", session=session)

``AsmSession`` is imported on first use, so loading the plugin (``asm plugins``, ``asm --help``)
never imports the SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._view import ITEM_ADDED, ITEM_POPPED, SESSION_CLEARED, USAGE_RECORDED, VIEW_TYPES

if TYPE_CHECKING:
    from .session import AsmSession

__all__ = ["AsmSession", "ITEM_ADDED", "ITEM_POPPED", "SESSION_CLEARED", "USAGE_RECORDED", "VIEW_TYPES"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "AsmSession":
        from .session import AsmSession

        return AsmSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
