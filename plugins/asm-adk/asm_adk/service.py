"""``AsmSessionService``: a Google ADK ``BaseSessionService`` on asm sessions and their logs.

An ADK session is an asm session; each ``append_event`` is one atomic unit: the
``adk.event_appended`` event and the session record carrying the new session-scope state and
``last_update_time``, conditional on the log not having moved since the caller's session object
was read (``expected_seq``; a stale writer gets ADK's ``StaleSessionError``). App- and user-scope
deltas then go to their scope's own log (see :mod:`asm_adk._view`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from asm_kernel import Session as AsmRecord
from asm_kernel import SessionStatus, WriteUnit
from asm_kernel.errors import AlreadyExistsError as AsmAlreadyExistsError
from asm_kernel.errors import SeqConflictError, SessionNotFoundError, StateError, ValidationError, WriteConflictError
from asm_kernel.events import EventType
from asm_kernel.model import utcnow
from attrs import evolve
from google.adk.errors import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError as AdkSessionNotFoundError
from google.adk.events.event import Event
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
from google.adk.sessions.session import Session
from google.adk.sessions.state import State

from ._view import (
    EVENT_APPENDED,
    SESSION_CREATED,
    SESSION_DELETED,
    STATE_UPDATED,
    ScopeView,
    SessionView,
    Views,
    app_key,
    app_tag,
    session_key,
    user_key,
    user_tag,
    views_for,
)

__all__ = ["AsmSessionService"]

_OPEN = (SessionStatus.PENDING, SessionStatus.ACTIVE, SessionStatus.PAUSED)
_PAGE = 500


def split_state(state: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(app, user, session) deltas of a state mapping, prefixes removed; temp: keys dropped."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in (state or {}).items():
        if key.startswith(State.APP_PREFIX):
            app[key[len(State.APP_PREFIX) :]] = value
        elif key.startswith(State.USER_PREFIX):
            user[key[len(State.USER_PREFIX) :]] = value
        elif not key.startswith(State.TEMP_PREFIX):
            own[key] = value
    return app, user, own


class AsmSessionService(BaseSessionService):
    """ADK sessions, events and app/user/session state kept in asm (any asm store).

    ``kernel`` is a started :class:`asm_kernel.Kernel`. Several services, tasks and processes
    (on a shared store) may use the same sessions: appends never lose or reorder events, and an
    append from a session object older than the stored session is refused with
    ``StaleSessionError`` (read the session again), as ADK's database service does.
    """

    def __init__(self, kernel: Any, *, agent_id: str = "adk") -> None:
        if not hasattr(kernel, "sessions") or not hasattr(kernel, "store"):
            raise ValidationError(
                f"kernel must be an asm_kernel.Kernel, got {type(kernel).__name__}",
                path="kernel",
                hint="async with asm_kernel.Kernel.open() as kernel: AsmSessionService(kernel)",
            )
        self.kernel = kernel
        self.agent_id = agent_id

    def __repr__(self) -> str:
        return f"AsmSessionService(store={type(self.kernel.store).__name__})"

    # -- views ------------------------------------------------------------------------------

    def _views(self) -> Views:
        if not getattr(self.kernel, "_started", True):
            raise StateError(
                "the asm kernel behind this session service is not started (or was closed)",
                hint="use the service inside `async with Kernel(...) as kernel:`",
            )
        return views_for(self.kernel)

    async def _record(self, key: str) -> AsmRecord | None:
        self._views()  # refuses a closed kernel with a clear error
        try:
            record: AsmRecord = await self.kernel.store.get_session(key)
        except SessionNotFoundError:
            return None
        return record

    async def _catch_up(self, key: str, view: SessionView) -> None:
        sessions = self.kernel.sessions
        if view.built:
            view.apply(await sessions.events(key, after=view.cursor), _decode)
            return
        # Events before the latest (re)creation are hidden for good: never read them again.
        created = await sessions.events(key, types=[SESSION_CREATED])
        start = created[-1].seq - 1 if created else 0
        fresh = view.apply(await sessions.events(key, after=start), _decode)
        view.built = True
        await self._repair(fresh)

    async def _repair(self, appended: list[Any]) -> None:
        """Write the app/user deltas a crashed writer stored in a session but not in its scope."""
        scopes: dict[str, ScopeView] = {}  # each scope is caught up once, not once per event
        for stored in appended:
            dump = stored.payload["event"]
            app, user, _ = split_state(((dump.get("actions") or {}).get("state_delta")) or {})
            if not (app or user) or dump.get("_app") is None:
                continue
            for key, delta in ((app_key(dump["_app"]), app), (user_key(dump["_app"], dump["_user"]), user)):
                if not delta:
                    continue
                if key not in scopes:
                    scopes[key] = await self._scope(key)
                if stored.id not in scopes[key].sources:
                    await self._write_scope(key, delta, stored.id)

    async def _scope(self, key: str) -> ScopeView:
        view = self._views().scope(key)
        try:
            view.apply(await self.kernel.sessions.events(key, after=view.cursor, types=[STATE_UPDATED]))
            view.exists = True
        except SessionNotFoundError:
            view.exists = False
        return view

    async def _write_scope(self, key: str, delta: dict[str, Any], source: str) -> None:
        view = self._views().scope(key)
        if not view.exists:
            try:
                await self.kernel.sessions.create(session_id=key, agent_id=self.agent_id, metadata={"scope": key})
            except AsmAlreadyExistsError:
                pass
            view.exists = True
        # The id derives from the session event, so a repeated write (a repair racing the
        # original writer) is recognised by the store and stored once.
        event = evolve(
            self.kernel.sessions.make_event(key, STATE_UPDATED, {"delta": delta, "source": source}),
            id=f"{source}.{key.split(':', 1)[0]}",
        )
        stored = await self.kernel.sessions.append(key, [event])
        with view.lock:
            contiguous = stored[0].seq == view.cursor + 1
        if contiguous:  # otherwise other writers' deltas come first: the next read applies them
            view.apply(stored)

    async def _merged(self, app_name: str, user_id: str, state: dict[str, Any]) -> dict[str, Any]:
        merged = dict(state)
        for prefix, key in ((State.APP_PREFIX, app_key(app_name)), (State.USER_PREFIX, user_key(app_name, user_id))):
            scope = await self._scope(key)
            with scope.lock:
                merged.update({prefix + k: v for k, v in scope.state.items()})
        return merged

    # -- BaseSessionService -----------------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        session_id = (session_id.strip() if session_id else None) or str(uuid.uuid4())
        key = session_key(app_name, user_id, session_id)
        app, user, own = split_state(state)
        now = time.time()
        meta = {
            "framework": "adk",
            "app_name": app_name,
            "user_id": user_id,
            "session_id": session_id,
            "state": own,
            "last_update_time": now,
            "deleted": False,
        }
        make = self.kernel.sessions.make_event
        created = make(key, SESSION_CREATED, {"app_name": app_name, "user_id": user_id, "session_id": session_id})
        existing = await self._record(key)
        exists_error = AlreadyExistsError(f"Session with id {session_id} already exists.")
        if existing is None:
            tags = (app_tag(app_name), user_tag(app_name, user_id))
            record = AsmRecord(id=key, agent_id=self.agent_id, metadata=meta, tags=tags)
            opened = make(
                key, EventType.SESSION_CREATED, {"agent_id": self.agent_id, "metadata": meta, "tags": list(tags)}
            )
            unit = WriteUnit(key, [opened, created], new_session=record)
        elif existing.metadata.get("deleted"):
            last = await self.kernel.store.last_seq(key)
            unit = WriteUnit(
                key,
                [created],
                session=evolve(existing, metadata=meta, updated_at=utcnow()),
                session_status=_OPEN,
                expected_seq=last,
            )
        else:
            raise exists_error
        try:
            committed = await self.kernel.sessions.commit(unit)
        except (AsmAlreadyExistsError, SeqConflictError):
            raise exists_error from None  # created (again) by another writer meanwhile
        view = self._views().session(key)
        if committed.events[0].seq == view.cursor + 1:
            view.apply(committed.events, _decode)
            view.built = view.built or existing is None
            view.record, view.record_seq = committed.session, committed.events[-1].seq
        for scope_key, delta in ((app_key(app_name), app), (user_key(app_name, user_id), user)):
            if delta:
                await self._write_scope(scope_key, delta, created.id)
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=await self._merged(app_name, user_id, own),
            last_update_time=now,
        )
        session._storage_update_marker = str(committed.events[-1].seq)
        return session

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        session_id = session_id.strip() if session_id else session_id
        key = session_key(app_name, user_id, session_id)
        view = self._views().session(key)
        record = None
        if view.built:
            try:
                await self._catch_up(key, view)
            except SessionNotFoundError:
                return None
            with view.lock:  # nothing happened since this process wrote the record: no read
                record = view.record if view.record_seq == view.cursor else None
        if record is None:
            record = await self._record(key)
            if record is None or record.metadata.get("deleted"):
                return None
            await self._catch_up(key, view)
        if record.metadata.get("deleted"):
            return None
        with view.lock:
            events = [e for _, e in view.events]
            marker = view.cursor
        if config is not None and config.num_recent_events is not None:
            events = events[-config.num_recent_events :] if config.num_recent_events else []
        if config is not None and config.after_timestamp is not None:
            i = len(events) - 1
            while i >= 0 and events[i].timestamp >= config.after_timestamp:
                i -= 1
            events = events[i + 1 :]
        session = Session(
            id=session_id,
            app_name=app_name,
            user_id=user_id,
            state=await self._merged(app_name, user_id, dict(record.metadata.get("state") or {})),
            events=[e.model_copy(deep=True) for e in events],  # callers may change what they get
            last_update_time=float(record.metadata.get("last_update_time") or 0.0),
        )
        session._storage_update_marker = str(marker)
        return session

    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        tag = app_tag(app_name) if user_id is None else user_tag(app_name, user_id)
        records: list[AsmRecord] = []
        offset = 0
        while True:
            page = await self.kernel.sessions.list(tag=tag, limit=_PAGE, offset=offset)
            records.extend(r for r in page if r.metadata.get("framework") == "adk" and not r.metadata.get("deleted"))
            if len(page) < _PAGE:
                break
            offset += _PAGE
        found = []
        for r in records:
            m = r.metadata
            state = await self._merged(m["app_name"], m["user_id"], dict(m.get("state") or {}))
            found.append(
                Session(
                    id=m["session_id"],
                    app_name=m["app_name"],
                    user_id=m["user_id"],
                    state=state,
                    last_update_time=float(m.get("last_update_time") or 0.0),
                )
            )
        found.sort(key=lambda s: (s.last_update_time, s.user_id, s.id))
        return ListSessionsResponse(sessions=found)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        session_id = session_id.strip() if session_id else session_id
        key = session_key(app_name, user_id, session_id)
        record = await self._record(key)
        if record is None or record.metadata.get("deleted"):
            return
        gone = evolve(record, metadata={**record.metadata, "deleted": True}, updated_at=utcnow())
        deleted = self.kernel.sessions.make_event(key, SESSION_DELETED, {})
        await self.kernel.sessions.commit(WriteUnit(key, [deleted], session=gone, session_status=_OPEN))
        view = self._views().session(key)
        with view.lock:
            view.record = None  # the next append reads the record again (and finds it deleted)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        scope = await self._scope(user_key(app_name, user_id))
        with scope.lock:
            return dict(scope.state)

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event
        key = session_key(session.app_name, session.user_id, session.id)
        view = self._views().session(key)
        marker = session._storage_update_marker
        with view.lock:
            record = (
                view.record if marker and marker.isdigit() and view.record_seq == int(marker) == view.cursor else None
            )
        if record is None:  # not what this process wrote last: read the record and the log
            record = await self._record(key)
            if record is None or record.metadata.get("deleted"):
                raise AdkSessionNotFoundError(f"Session {session.id} not found.")
            await self._catch_up(key, view)
        # (Otherwise this session object is as new as what this process last wrote: no read is
        # needed, and expected_seq below refuses the write if anyone else wrote meanwhile.)
        with view.lock:
            redelivered = any(e.id == event.id and e == event for _, e in view.events)
        if redelivered:
            return event  # an equal re-delivery: stored once (as ADK's own services do)
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        dump = event.model_dump(mode="json", exclude_none=True)
        app, user, own = split_state(event.actions.state_delta if event.actions else None)
        meta = {
            **record.metadata,
            "state": {**(record.metadata.get("state") or {}), **own},
            "last_update_time": event.timestamp,
        }
        stored_event = self.kernel.sessions.make_event(
            key, EVENT_APPENDED, {"event": {**dump, "_app": session.app_name, "_user": session.user_id}}
        )
        unit = WriteUnit(
            key,
            [stored_event],
            session=evolve(record, metadata=meta, updated_at=utcnow()),
            session_status=_OPEN,
            expected_seq=int(marker) if marker and marker.isdigit() else None,
        )
        try:
            committed = await self.kernel.sessions.commit(unit)
        except SeqConflictError as exc:
            raise StaleSessionError(
                f"The session has been modified in storage since it was loaded (asm session {key} is at seq "
                f"{exc.details.get('actual')}, this session object at {marker}). Reload it with get_session."
            ) from exc
        except WriteConflictError:
            raise StateError(
                f"asm session {key} is final; it takes no more events", hint="create a new session"
            ) from None
        (stored,) = committed.events
        if stored.seq == view.cursor + 1:
            view.apply(committed.events, lambda _: event.model_copy(deep=True))
            view.record, view.record_seq = committed.session, stored.seq
        session._storage_update_marker = str(stored.seq)
        self._views().trim()
        for scope_key, delta in ((app_key(session.app_name), app), (user_key(session.app_name, session.user_id), user)):
            if delta:
                await self._write_scope(scope_key, delta, stored.id)
        self._commit_event_to_session(session, event)
        session.last_update_time = event.timestamp
        return event


def _decode(dump: dict[str, Any]) -> Event:
    return Event.model_validate(_adk(dump))


def _adk(dump: dict[str, Any]) -> dict[str, Any]:
    """The ADK event JSON of a stored dump (without the scope names stored beside it for repairs)."""
    return {k: v for k, v in dump.items() if k not in ("_app", "_user")}
