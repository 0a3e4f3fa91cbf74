"""The view an OpenAI Agents session sees, derived from its asm log, and the cache that holds it.

The log is the truth; the view is a projection kept in memory so reads cost what the caller asks
for, not what the log holds. Rules, applied in seq order:

* ``openai_agents.item_added`` appends its item;
* ``openai_agents.item_popped`` removes the newest item still visible at that point of the log;
* ``openai_agents.session_cleared`` hides every item before it;
* ``openai_agents.usage_recorded`` adds its usage delta to the session's totals.

Because the store assigns seqs atomically, two concurrent pops always remove two different items,
and the item a pop removed is known once the view has caught up to the pop's seq.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from asm_kernel import Event
from asm_kernel.views import PerKernel
from asm_kernel.views import ViewCache as ViewCacheOf

__all__ = [
    "ITEM_ADDED",
    "ITEM_POPPED",
    "SESSION_CLEARED",
    "USAGE_RECORDED",
    "VIEW_TYPES",
    "USAGE_FIELDS",
    "SessionView",
    "ViewCache",
    "views_for",
]

ITEM_ADDED = "openai_agents.item_added"
ITEM_POPPED = "openai_agents.item_popped"
SESSION_CLEARED = "openai_agents.session_cleared"
USAGE_RECORDED = "openai_agents.usage_recorded"
VIEW_TYPES: tuple[str, ...] = (ITEM_ADDED, ITEM_POPPED, SESSION_CLEARED, USAGE_RECORDED)
#: Usage counters a ``usage_recorded`` event may carry (all integers, summed per session).
USAGE_FIELDS: tuple[str, ...] = (
    "requests",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)

#: Memory (bytes of item JSON, roughly) the views of one kernel may hold; least recently used
#: sessions are dropped first and rebuilt from their log when used again.
CACHE_BYTES = 64 * 2**20
#: Pops whose removed item is remembered until the popping caller collects it.
_POPPED_MEMORY = 1024
_OVERHEAD = 64


class SessionView:
    """Visible items (as JSON text, so callers always get fresh objects) and usage totals.

    ``cursor`` is the highest seq of a view event applied. All mutation happens under ``lock``
    without awaiting, so tasks of one loop and threads running other loops (``Runner.run_sync``)
    can share a view.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = 0
        self.items: list[tuple[int, str]] = []
        self.usage: dict[str, int] = dict.fromkeys(USAGE_FIELDS, 0)
        self.size = _OVERHEAD
        self.exists = False
        self._popped: OrderedDict[int, str | None] = OrderedDict()

    def apply(self, events: Iterable[Event]) -> None:
        """Apply events in seq order; those at or below the cursor were applied already."""
        with self.lock:
            for event in events:
                if event.seq <= self.cursor:
                    continue
                self.cursor = event.seq
                if event.type == ITEM_ADDED:
                    text = json.dumps(event.payload.get("item"), ensure_ascii=False)
                    self.items.append((event.seq, text))
                    self.size += len(text) + _OVERHEAD
                elif event.type == ITEM_POPPED:
                    removed = self.items.pop() if self.items else None
                    if removed is not None:
                        self.size -= len(removed[1]) + _OVERHEAD
                    self._popped[event.seq] = removed[1] if removed else None
                    while len(self._popped) > _POPPED_MEMORY:
                        self._popped.popitem(last=False)
                elif event.type == SESSION_CLEARED:
                    self.items.clear()
                    self.size = _OVERHEAD
                elif event.type == USAGE_RECORDED:
                    for name in USAGE_FIELDS:
                        value = event.payload.get(name)
                        if isinstance(value, int) and not isinstance(value, bool):
                            self.usage[name] += value

    def collect_pop(self, seq: int) -> Any:
        """The item removed by the pop stored at ``seq`` (None: nothing was visible)."""
        with self.lock:
            text = self._popped.pop(seq, None)
        return None if text is None else json.loads(text)

    def tail(self, limit: int | None) -> list[Any]:
        """The newest ``limit`` visible items (all for None or a negative limit), oldest first."""
        with self.lock:
            if limit is None or limit < 0:
                chosen = list(self.items)
            elif limit == 0:
                chosen = []
            else:
                chosen = self.items[-limit:]
        return [json.loads(text) for _, text in chosen]


ViewCache = ViewCacheOf[SessionView]

_CACHES: PerKernel[ViewCache] = PerKernel(lambda: ViewCacheOf(SessionView, CACHE_BYTES))


def views_for(kernel: Any) -> ViewCache:
    """The views of ``kernel``'s sessions, shared by every AsmSession made on it."""
    return _CACHES.get(kernel)


def forget(kernel: Any) -> None:
    """Drop a kernel's views (it is stopping; a reopened store is read afresh)."""
    _CACHES.forget(kernel)
