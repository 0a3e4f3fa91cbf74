"""In-memory projections of session logs, bounded in bytes, one cache per kernel.

An adapter that answers a framework's reads from asm's log (the OpenAI Agents SDK's session,
LangGraph's checkpointer, ADK's session service) keeps a *view* per session: the log replayed
into the shape the framework asks for. The log stays the truth; a view dropped from the cache
is rebuilt from it when next used. A view is any object with a ``size`` (bytes, roughly) that
the adapter keeps current.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["View", "ViewCache", "PerKernel"]


class View(Protocol):
    size: int


V = TypeVar("V", bound=View)
C = TypeVar("C", bound="ViewCache[Any]")

#: Past this many views, the cache sums their sizes only every 64th trim (summing is O(views)).
_SUM_EVERY_TRIM = 256


class ViewCache(Generic[V]):
    """Views by key, least recently used dropped once they hold more than ``max_bytes``.

    Thread-safe: tasks of one loop and threads running other loops may share it.
    """

    def __init__(self, factory: Callable[[], V], max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._factory = factory
        self._views: OrderedDict[str, V] = OrderedDict()
        self._trims = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> V:
        """The view of ``key``, a new empty one if it is not cached; now the most recently used."""
        with self._lock:
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = self._factory()
            else:
                self._views.move_to_end(key)
            return view

    def trim(self) -> None:
        """Drop least recently used views until the cache fits (the newest is always kept).

        With many views cached the sizes are summed every 64th call, so the bound is
        approximate by a few writes' worth, never unbounded.
        """
        with self._lock:
            self._trims += 1
            if len(self._views) > _SUM_EVERY_TRIM and self._trims % 64:
                return
            total = sum(v.size for v in self._views.values())
            while total > self.max_bytes and len(self._views) > 1:
                _, dropped = self._views.popitem(last=False)
                total -= dropped.size

    def clear(self) -> None:
        with self._lock:
            self._views.clear()

    @property
    def stats(self) -> tuple[int, int]:
        """(views, bytes) held now."""
        with self._lock:
            return len(self._views), sum(v.size for v in self._views.values())


class PerKernel(Generic[C]):
    """One cache per kernel, made on first use and gone with the kernel.

    Applications typically build a new session object per request: sharing the kernel's cache
    means none of them re-reads its log.
    """

    def __init__(self, make: Callable[[], C]) -> None:
        self._make = make
        self._caches: weakref.WeakKeyDictionary[Any, C] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, kernel: Any) -> C:
        """``kernel``'s cache."""
        with self._lock:
            cache = self._caches.get(kernel)
            if cache is None:
                cache = self._caches[kernel] = self._make()
            return cache

    def forget(self, kernel: Any) -> None:
        """Drop ``kernel``'s cache (it is stopping; a reopened store is read afresh)."""
        with self._lock:
            cache = self._caches.pop(kernel, None)
        if cache is not None:
            cache.clear()
