"""asm-langgraph: a LangGraph checkpointer whose threads are asm event logs.

>>> from asm_langgraph import AsmCheckpointSaver            # doctest: +SKIP
>>> graph = builder.compile(checkpointer=AsmCheckpointSaver(kernel))

``AsmCheckpointSaver`` is imported on first use, so loading the plugin never imports LangGraph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._view import BLOB_PUT, CHECKPOINT_PUT, THREAD_DELETED, VIEW_TYPES, WRITES_PUT

if TYPE_CHECKING:
    from .saver import AsmCheckpointSaver

__all__ = ["AsmCheckpointSaver", "CHECKPOINT_PUT", "BLOB_PUT", "WRITES_PUT", "THREAD_DELETED", "VIEW_TYPES"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "AsmCheckpointSaver":
        from .saver import AsmCheckpointSaver

        return AsmCheckpointSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
