"""A LangGraph thread as asm events, and the in-memory view of it the saver answers from.

Events (payload bytes are base64 text, serialized by the saver's ``serde`` as ``(type, bytes)``):

* ``langgraph.checkpoint_put`` — ``ns``, ``id``, ``parent_id``, ``checkpoint`` and ``metadata``
  (typed), ``blobs``: the channel values of ``new_versions`` as ``[channel, version, type, data]``
  (a large checkpoint carries them in ``langgraph.blob_put`` events of the same unit instead);
* ``langgraph.writes_put`` — ``ns``, ``checkpoint_id``, ``task_id``, ``task_path``, ``writes`` as
  ``[idx, channel, type, data]``; a regular write (``idx >= 0``) already stored for that task is
  kept, a special one (errors, interrupts: negative ``idx``) replaced, as ``InMemorySaver`` does;
* ``langgraph.checkpoints_deleted`` — ``checkpoints``: ``[ns, id]`` pairs removed from the view
  with their writes (``delete_for_runs``, ``prune``); channel values stay, kept checkpoints may
  share them;
* ``langgraph.thread_deleted`` — everything before it is gone from the view.

Replayed in seq order these rules give the same view in every process, whatever the
interleaving of concurrent writers, because the store orders a session's events atomically.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from typing import Any

from asm_kernel import Event
from asm_kernel.views import PerKernel
from asm_kernel.views import ViewCache as ViewCacheOf

__all__ = [
    "CHECKPOINT_PUT",
    "BLOB_PUT",
    "WRITES_PUT",
    "CHECKPOINTS_DELETED",
    "THREAD_DELETED",
    "VIEW_TYPES",
    "Typed",
    "Saved",
    "ThreadView",
    "ViewCache",
    "views_for",
    "encode",
    "decode",
]

CHECKPOINT_PUT = "langgraph.checkpoint_put"
BLOB_PUT = "langgraph.blob_put"
WRITES_PUT = "langgraph.writes_put"
CHECKPOINTS_DELETED = "langgraph.checkpoints_deleted"
THREAD_DELETED = "langgraph.thread_deleted"
VIEW_TYPES: tuple[str, ...] = (CHECKPOINT_PUT, BLOB_PUT, WRITES_PUT, CHECKPOINTS_DELETED, THREAD_DELETED)

#: Memory (bytes, roughly) the thread views of one kernel may hold; least recently used threads
#: are dropped first and rebuilt from their log when used again.
CACHE_BYTES = 256 * 2**20
_OVERHEAD = 128

Typed = tuple[str, bytes]
#: A stored checkpoint: (checkpoint without channel values, metadata, parent id).
Saved = tuple[Typed, Typed, str | None]
#: A stored write: (task_id, channel, value, task_path).
Write = tuple[str, str, Typed, str]


def encode(typed: Typed) -> list[str]:
    return [typed[0], base64.b64encode(typed[1]).decode("ascii")]


def decode(pair: list[str]) -> Typed:
    return pair[0], base64.b64decode(pair[1])


class ThreadView:
    """Checkpoints, channel blobs and pending writes of one thread, as of ``cursor``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = 0
        self.exists = False
        self.size = _OVERHEAD
        #: ns -> checkpoint id -> Saved (ids sort by time: they are uuid6).
        self.checkpoints: dict[str, dict[str, Saved]] = {}
        self.blobs: dict[tuple[str, str, Any], Typed] = {}
        self.writes: dict[tuple[str, str], dict[tuple[str, int], Write]] = {}
        #: ns -> its newest checkpoint id (what get_tuple without an id answers), kept current.
        self.latest: dict[str, str] = {}

    def apply(self, events: Iterable[Event]) -> None:
        """Apply events in seq order; those at or below the cursor were applied already."""
        with self.lock:
            for event in events:
                if event.seq <= self.cursor:
                    continue
                self.cursor = event.seq
                p = event.payload
                if event.type == CHECKPOINT_PUT:
                    self._blobs(p["ns"], p.get("blobs", ()))
                    metadata = decode(p["metadata"])
                    saved = (decode(p["checkpoint"]), metadata, p.get("parent_id"))
                    self.checkpoints.setdefault(p["ns"], {})[p["id"]] = saved
                    if p["id"] > self.latest.get(p["ns"], ""):
                        self.latest[p["ns"]] = p["id"]
                    self.size += len(saved[0][1]) + len(metadata[1]) + _OVERHEAD
                elif event.type == BLOB_PUT:
                    self._blobs(p["ns"], p["blobs"])
                elif event.type == WRITES_PUT:
                    stored = self.writes.setdefault((p["ns"], p["checkpoint_id"]), {})
                    for idx, channel, kind, data in p["writes"]:
                        key = (p["task_id"], idx)
                        if idx >= 0 and key in stored:
                            continue  # a retried task's regular write: the first one stands
                        value = (kind, base64.b64decode(data))
                        stored[key] = (p["task_id"], channel, value, p.get("task_path", ""))
                        self.size += len(value[1]) + _OVERHEAD
                elif event.type == CHECKPOINTS_DELETED:
                    for ns, checkpoint_id in p["checkpoints"]:
                        self.checkpoints.get(ns, {}).pop(checkpoint_id, None)
                        self.writes.pop((ns, checkpoint_id), None)
                        if self.latest.get(ns) == checkpoint_id:
                            remaining = self.checkpoints.get(ns)
                            if remaining:
                                self.latest[ns] = max(remaining)
                            else:
                                self.latest.pop(ns, None)
                elif event.type == THREAD_DELETED:
                    self.latest.clear()
                    self.checkpoints.clear()
                    self.blobs.clear()
                    self.writes.clear()
                    self.size = _OVERHEAD

    def _blobs(self, ns: str, blobs: Iterable[list[Any]]) -> None:
        for channel, version, kind, data in blobs:
            value = (kind, base64.b64decode(data))
            self.blobs[(ns, channel, version)] = value
            self.size += len(value[1]) + _OVERHEAD


ViewCache = ViewCacheOf[ThreadView]

_CACHES: PerKernel[ViewCache] = PerKernel(lambda: ViewCacheOf(ThreadView, CACHE_BYTES))


def views_for(kernel: Any) -> ViewCache:
    """The views of ``kernel``'s threads, shared by every saver built on it."""
    return _CACHES.get(kernel)


def forget(kernel: Any) -> None:
    """Drop a kernel's views (it is stopping; a reopened store is read afresh)."""
    _CACHES.forget(kernel)
