"""``use = "memory"``: a store that keeps everything in this process and nothing on disk.

For tests, demos and short scripts. It honours the whole store contract except durability.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from attrs import evolve, frozen

from .. import hookimpl
from ..errors import (
    AlreadyExistsError,
    RunNotFoundError,
    SeqConflictError,
    SessionNotFoundError,
    StoreClosedError,
    ValidationError,
)
from ..model import Event, Run, RunStatus, Session, SessionStatus
from ..storage import Notifier, check_batch, check_read_args, wait_for_events


@frozen
class MemorySettings:
    """The memory store has no settings."""


def _page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or limit < 0:
        raise ValidationError(f"limit must be an integer >= 0, got {limit!r}", path="limit")
    if not isinstance(offset, int) or offset < 0:
        raise ValidationError(f"offset must be an integer >= 0, got {offset!r}", path="offset")


class MemoryStore:
    """Thread-safe in-process store."""

    #: Only this process writes it, so the kernel may cache its records.
    exclusive = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._runs: dict[str, Run] = {}
        self._logs: dict[str, list[Event]] = {}
        self._by_id: dict[str, Event] = {}
        self._notifier = Notifier()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(sessions={len(self._sessions)})"

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the memory store is closed", hint="open a new kernel")

    # -- sessions ---------------------------------------------------------------------------

    async def create_session(self, session: Session) -> Session:
        self._check_open()
        with self._lock:
            if session.id in self._sessions:
                raise AlreadyExistsError(f"session {session.id!r} already exists")
            self._sessions[session.id] = session
            self._logs[session.id] = []
        return session

    async def get_session(self, session_id: str) -> Session:
        self._check_open()
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFoundError(f"no session {session_id!r}", hint="`asm sessions list` shows the ids") from None

    async def update_session(self, session: Session) -> Session:
        self._check_open()
        with self._lock:
            if session.id not in self._sessions:
                raise SessionNotFoundError(f"no session {session.id!r}")
            self._sessions[session.id] = session
        return session

    async def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        agent_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]:
        self._check_open()
        _page(limit, offset)
        found = [
            s
            for s in self._sessions.values()
            if (status is None or s.status == status)
            and (agent_id is None or s.agent_id == agent_id)
            and (tag is None or tag in s.tags)
        ]
        found.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        return found[offset : offset + limit]

    # -- runs -------------------------------------------------------------------------------

    async def create_run(self, run: Run) -> Run:
        self._check_open()
        with self._lock:
            if run.session_id not in self._sessions:
                raise SessionNotFoundError(f"no session {run.session_id!r} for run {run.id!r}")
            if run.id in self._runs:
                raise AlreadyExistsError(f"run {run.id!r} already exists")
            self._runs[run.id] = run
        return run

    async def get_run(self, run_id: str) -> Run:
        self._check_open()
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(f"no run {run_id!r}") from None

    async def update_run(self, run: Run) -> Run:
        self._check_open()
        with self._lock:
            if run.id not in self._runs:
                raise RunNotFoundError(f"no run {run.id!r}")
            self._runs[run.id] = run
        return run

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        self._check_open()
        _page(limit, offset)
        found = [
            r
            for r in self._runs.values()
            if (session_id is None or r.session_id == session_id) and (status is None or r.status == status)
        ]
        found.sort(key=lambda r: (r.created_at, r.id))
        return found[offset : offset + limit]

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        self._check_open()
        for run in self._runs.values():
            if run.session_id == session_id and run.idempotency_key == key:
                return run
        return None

    # -- events -----------------------------------------------------------------------------

    async def append(self, session_id: str, events: Sequence[Event], *, expected_seq: int | None = None) -> list[Event]:
        self._check_open()
        check_batch(session_id, events, expected_seq)
        with self._lock:
            log = self._logs.get(session_id)
            if log is None:
                raise SessionNotFoundError(
                    f"cannot append to session {session_id!r}: it does not exist",
                    hint="create the session first",
                )
            stored = [self._by_id.get(e.id) for e in events]
            if stored and all(s is not None for s in stored):
                return [s for s in stored if s is not None]
            if expected_seq is not None and expected_seq != len(log):
                raise SeqConflictError(
                    f"session {session_id!r} is at seq {len(log)}, not the expected {expected_seq}",
                    hint="re-read the log and retry",
                    expected=expected_seq,
                    actual=len(log),
                )
            out: list[Event] = []
            for event, existing in zip(events, stored, strict=True):
                if existing is not None:
                    out.append(existing)
                    continue
                event = evolve(event, seq=len(log) + 1)
                log.append(event)
                self._by_id[event.id] = event
                out.append(event)
        self._notifier.notify(session_id)
        return out

    async def read(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[Event]:
        self._check_open()
        check_read_args(after, before, limit)
        log = self._logs.get(session_id)
        if log is None:
            raise SessionNotFoundError(f"no session {session_id!r}")
        end = len(log) if before is None else min(len(log), before - 1)
        selected: list[Any] = log[after:end]
        if types:
            wanted = set(types)
            selected = [e for e in selected if e.type in wanted]
        return selected[:limit] if limit is not None else list(selected)

    async def last(self, session_id: str, n: int) -> list[Event]:
        self._check_open()
        if not isinstance(n, int) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r}", path="n")
        log = self._logs.get(session_id)
        if log is None:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return log[-n:] if n else []

    async def last_seq(self, session_id: str) -> int:
        self._check_open()
        log = self._logs.get(session_id)
        if log is None:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return len(log)

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        return await wait_for_events(
            self._notifier, session_id, after, timeout, lambda: self.read(session_id, after=after)
        )


def build(settings: MemorySettings, context: Any) -> MemoryStore:
    return MemoryStore()


@hookimpl
def asm_register_stores(register: Any) -> None:
    register("memory", build, settings=MemorySettings, description="in-process, nothing on disk")
