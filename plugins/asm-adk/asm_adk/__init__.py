"""asm-adk: a Google ADK session service whose sessions and state are asm event logs.

>>> from asm_adk import AsmSessionService                  # doctest: +SKIP
>>> runner = Runner(agent=agent, app_name="shop", session_service=AsmSessionService(kernel))

``AsmSessionService`` is imported on first use, so loading the plugin never imports ADK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._view import EVENT_APPENDED, SESSION_CREATED, SESSION_DELETED, STATE_UPDATED

if TYPE_CHECKING:
    from .service import AsmSessionService

__all__ = ["AsmSessionService", "SESSION_CREATED", "EVENT_APPENDED", "SESSION_DELETED", "STATE_UPDATED"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "AsmSessionService":
        from .service import AsmSessionService

        return AsmSessionService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
