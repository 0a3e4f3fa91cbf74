"""ADK sessions and state scopes as asm sessions, and the in-memory views of their logs.

Each ADK session ``(app_name, user_id, session_id)`` is one asm session (see :func:`session_key`)
whose log holds:

* ``adk.session_created`` — ``app_name``, ``user_id``, ``session_id``; the view starts over here
  (a session deleted and created again begins afresh);
* ``adk.event_appended`` — ``event``: the ADK event as JSON (temp: keys already trimmed), its
  ``state_delta`` included;
* ``adk.session_deleted`` — the session is gone from every read.

Its asm session record carries the current session-scope state, ``last_update_time`` and a
``deleted`` flag in ``metadata``, written in the same unit as the event that changed them, so
``list_sessions`` answers from records without reading any log.

App-scope and user-scope state live in their own asm sessions (``adk-app:...``,
``adk-user:...``) as ``adk.state_updated`` events (``delta``, and ``source``: the id of the
session event that carried it), applied in log order.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from asm_kernel import Event
from asm_kernel.views import PerKernel
from asm_kernel.views import ViewCache as ViewCacheOf

__all__ = [
    "SESSION_CREATED",
    "EVENT_APPENDED",
    "SESSION_DELETED",
    "STATE_UPDATED",
    "SESSION_TYPES",
    "session_key",
    "app_key",
    "user_key",
    "SessionView",
    "ScopeView",
    "Views",
    "views_for",
]

SESSION_CREATED = "adk.session_created"
EVENT_APPENDED = "adk.event_appended"
SESSION_DELETED = "adk.session_deleted"
STATE_UPDATED = "adk.state_updated"
SESSION_TYPES: tuple[str, ...] = (SESSION_CREATED, EVENT_APPENDED, SESSION_DELETED)

#: Memory (bytes of event JSON, roughly) the session views of one kernel may hold; least
#: recently used are dropped first and rebuilt from their log when used again.
CACHE_BYTES = 64 * 2**20
_OVERHEAD = 256
#: Session event ids a scope view remembers (see ScopeView.sources).
SOURCES_KEPT = 100_000


def _part(value: str) -> str:
    # Percent-encoded so that ("a:b", "c") and ("a", "b:c") never name the same asm session.
    return quote(value, safe="")


def session_key(app_name: str, user_id: str, session_id: str) -> str:
    return f"adk:{_part(app_name)}:{_part(user_id)}:{_part(session_id)}"


def app_key(app_name: str) -> str:
    return f"adk-app:{_part(app_name)}"


def user_key(app_name: str, user_id: str) -> str:
    return f"adk-user:{_part(app_name)}:{_part(user_id)}"


def user_tag(app_name: str, user_id: str) -> str:
    return f"adk.user={_part(app_name)}/{_part(user_id)}"


def app_tag(app_name: str) -> str:
    return f"adk.app={_part(app_name)}"


class SessionView:
    """The events of one ADK session since its last creation, as of ``cursor``.

    Events are kept decoded (``decode`` turns a stored payload into an ADK event, once); readers
    get copies. ``record`` is the asm session record as of ``record_seq``, when this process
    wrote it last, so an append from an up-to-date session object needs no read.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = 0
        self.built = False
        self.events: list[tuple[int, Any]] = []
        self.deleted = False
        self.record: Any = None
        self.record_seq = -1
        self.size = _OVERHEAD

    def apply(self, events: Iterable[Event], decode: Any) -> list[Event]:
        """Apply events in seq order (those at or below the cursor were applied already);
        returns the ``event_appended`` events that were new to this view."""
        fresh: list[Event] = []
        with self.lock:
            for event in events:
                if event.seq <= self.cursor:
                    continue
                self.cursor = event.seq
                if event.type == SESSION_CREATED:
                    self.events.clear()
                    self.size = _OVERHEAD
                    self.deleted = False
                elif event.type == EVENT_APPENDED:
                    self.events.append((event.seq, decode(event.payload["event"])))
                    # decoded events take a few times their JSON; the JSON is the measure kept
                    self.size += len(json.dumps(event.payload["event"], default=str)) + _OVERHEAD
                    fresh.append(event)
                elif event.type == SESSION_DELETED:
                    self.events.clear()
                    self.size = _OVERHEAD
                    self.deleted = True
        return fresh


class ScopeView:
    """App or user state: the deltas of ``state_updated`` events merged in log order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cursor = 0
        self.exists: bool | None = None
        self.state: dict[str, Any] = {}
        #: Ids of the session events whose deltas this scope holds, the newest SOURCES_KEPT (to
        #: repair a crash between a session's write and its scope's without a store round trip;
        #: an older id missing here is simply written again: its id makes that a no-op).
        self.sources: OrderedDict[str, None] = OrderedDict()

    def apply(self, events: Iterable[Event]) -> None:
        with self.lock:
            for event in events:
                if event.seq <= self.cursor:
                    continue
                self.cursor = event.seq
                if event.type == STATE_UPDATED:
                    self.state.update(event.payload.get("delta", {}))
                    if event.payload.get("source"):
                        self.sources[event.payload["source"]] = None
                        if len(self.sources) > SOURCES_KEPT:
                            self.sources.popitem(last=False)


class Views(ViewCacheOf[SessionView]):
    """One kernel's session views, least recently used dropped past ``max_bytes``, and its
    scope views (small, and always kept)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        super().__init__(SessionView, max_bytes)
        self._scopes: dict[str, ScopeView] = {}
        self._scopes_lock = threading.Lock()

    def session(self, key: str) -> SessionView:
        return self.get(key)

    def scope(self, key: str) -> ScopeView:
        with self._scopes_lock:
            view = self._scopes.get(key)
            if view is None:
                view = self._scopes[key] = ScopeView()
            return view

    def clear(self) -> None:
        super().clear()
        with self._scopes_lock:
            self._scopes.clear()


_VIEWS: PerKernel[Views] = PerKernel(Views)


def views_for(kernel: Any) -> Views:
    return _VIEWS.get(kernel)


def forget(kernel: Any) -> None:
    _VIEWS.forget(kernel)
