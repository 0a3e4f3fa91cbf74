"""``use = "memory"``: a store that keeps everything in this process and nothing on disk.

For tests, demos and short scripts. It honours the whole store contract except durability:
atomic units under one lock, run leases judged by its clock (injectable, for tests), fencing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from attrs import evolve, frozen

from .. import hookimpl
from ..errors import RunNotFoundError, SessionNotFoundError, StoreClosedError, ValidationError
from ..model import Event, Fence, Run, RunStatus, Session, SessionStatus, utcnow
from ..storage import Notifier, append_unit, check_claim, check_page, check_read_args, check_unit, wait_for_events
from ..writes import Committed, StoreCapabilities, UnitState, WriteUnit, plan_unit
from ..writes import lease_expired as lease_expired_at

__all__ = ["MemoryStore", "MemorySettings"]

#: Runs that keep their session open (and, but for pending ones, hold its place in the queue).
_LIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


@frozen
class MemorySettings:
    """The memory store has no settings."""


class MemoryStore:
    """Thread-safe in-process store.

    ``clock`` is the store's clock (it judges leases); tests pass a fake one to expire leases
    without waiting.
    """

    capabilities = StoreCapabilities(shared=False, durable=False, durability="none", leases=True)

    def __init__(self, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._runs: dict[str, Run] = {}
        self._session_runs: dict[str, list[str]] = {}
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

    # -- writing ----------------------------------------------------------------------------

    async def commit(self, unit: WriteUnit) -> Committed:
        self._check_open()
        check_unit(unit)
        sid = unit.session_id
        with self._lock:
            names = {w.run.id for w in unit.new_runs} | {w.run.id for w in unit.runs}
            if unit.fence is not None:
                names.add(unit.fence.run_id)
            live: list[str] = []
            if unit.no_live_runs:
                live = [r for r in self._session_runs.get(sid, ()) if self._runs[r].status in _LIVE]
            wanted = {w.run.idempotency_key for w in unit.new_runs} - {None}
            keys: dict[str, str] = {}
            if wanted:
                for r in self._session_runs.get(sid, ()):
                    key = self._runs[r].idempotency_key
                    if key is not None and key in wanted:
                        keys[key] = r
            state = UnitState(
                keys=keys,
                session=self._sessions.get(sid),
                runs={n: self._runs[n] for n in names if n in self._runs},
                last_seq=len(self._logs.get(sid, ())),
                stored=[self._by_id.get(e.id) for e in unit.events],
                now=self.clock(),
                live_runs=live,
            )
            plan = plan_unit(unit, state)
            if plan.replayed:
                return plan.committed()
            if plan.create_session:
                self._logs[sid] = []
                self._session_runs[sid] = []
            if plan.session is not None:
                self._sessions[sid] = plan.session
            for run in plan.runs:
                if run.id in plan.create_runs:
                    self._session_runs[sid].append(run.id)
                self._runs[run.id] = run
            log = self._logs[sid]
            for event in plan.new_events:
                log.append(event)
                self._by_id[event.id] = event
        if plan.new_events:
            self._notifier.notify(sid)
        return plan.committed()

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
        durable: bool = True,
    ) -> list[Event]:
        unit = append_unit(session_id, events, expected_seq=expected_seq, fence=fence, durable=durable)
        return list((await self.commit(unit)).events)

    async def claim_runs(
        self, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int = 1
    ) -> list[Run]:
        self._check_open()
        check_claim(owner, limit, lease_ttl, max_running_per_session)
        claimed: list[Run] = []
        with self._lock:
            now = self.clock()
            expires = now + timedelta(seconds=lease_ttl)
            pending = sorted(
                (r for r in self._runs.values() if r.status is RunStatus.PENDING), key=lambda r: (r.created_at, r.id)
            )
            busy: dict[str, int] = {}
            for run in self._runs.values():
                held = run.status in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL) or (
                    run.status is RunStatus.PENDING and not lease_expired_at(run, now)
                )
                if held:
                    busy[run.session_id] = busy.get(run.session_id, 0) + 1
            for run in pending:
                if len(claimed) >= limit:
                    break
                session = self._sessions[run.session_id]
                if session.status not in (SessionStatus.PENDING, SessionStatus.ACTIVE):
                    continue
                if not lease_expired_at(run, now):
                    continue  # claimed by a live worker
                if busy.get(run.session_id, 0) >= max_running_per_session:
                    continue
                taken = evolve(run, owner=owner, lease_token=run.lease_token + 1, lease_expires_at=expires)
                self._runs[run.id] = taken
                busy[run.session_id] = busy.get(run.session_id, 0) + 1
                claimed.append(taken)
        return claimed

    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        self._check_open()
        lost: list[str] = []
        with self._lock:
            expires = self.clock() + timedelta(seconds=ttl)
            for fence in fences:
                run = self._runs.get(fence.run_id)
                if run is None or run.lease_token != fence.token or run.status is not RunStatus.RUNNING:
                    lost.append(fence.run_id)
                    continue
                self._runs[run.id] = evolve(run, lease_expires_at=expires)
        return lost

    # -- sessions and runs ------------------------------------------------------------------

    async def get_session(self, session_id: str) -> Session:
        self._check_open()
        try:
            return self._sessions[session_id]
        except (KeyError, TypeError):
            raise SessionNotFoundError(
                f"no session {session_id!r:.80}", hint="`asm sessions list` shows the ids"
            ) from None

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
        check_page(limit, offset)
        found = [
            s
            for s in list(self._sessions.values())
            if (status is None or s.status == status)
            and (agent_id is None or s.agent_id == agent_id)
            and (tag is None or tag in s.tags)
        ]
        found.sort(key=lambda s: (s.created_at, s.id), reverse=True)
        return found[offset : offset + limit]

    async def get_run(self, run_id: str) -> Run:
        self._check_open()
        try:
            return self._runs[run_id]
        except (KeyError, TypeError):
            raise RunNotFoundError(f"no run {run_id!r:.80}") from None

    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        lease_expired: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        self._check_open()
        check_page(limit, offset)
        now = self.clock()
        if session_id is not None:
            runs = [self._runs[r] for r in list(self._session_runs.get(session_id, ()))]
        else:
            runs = list(self._runs.values())
        found = [
            r
            for r in runs
            if (status is None or r.status == status)
            and (lease_expired is None or (r.status is RunStatus.RUNNING and lease_expired_at(r, now) == lease_expired))
        ]
        found.sort(key=lambda r: (r.created_at, r.id))
        return found[offset : offset + limit]

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        self._check_open()
        for run_id in list(self._session_runs.get(session_id, ())):
            run = self._runs[run_id]
            if run.idempotency_key == key:
                return run
        return None

    # -- reading the log --------------------------------------------------------------------

    def _log(self, session_id: str) -> list[Event]:
        log = self._logs.get(session_id) if isinstance(session_id, str) else None
        if log is None:
            raise SessionNotFoundError(f"no session {session_id!r:.80}")
        return log

    async def read(
        self,
        session_id: str,
        *,
        after: int = 0,
        before: int | None = None,
        limit: int | None = None,
        types: Sequence[str] | None = None,
        run_id: str | None = None,
    ) -> list[Event]:
        self._check_open()
        check_read_args(after, before, limit, types, run_id)
        log = self._log(session_id)
        end = len(log) if before is None else min(len(log), before - 1)
        selected: list[Any] = log[after:end]
        if types:
            wanted = set(types)
            selected = [e for e in selected if e.type in wanted]
        if run_id is not None:
            selected = [e for e in selected if e.run_id == run_id]
        return selected[:limit] if limit is not None else list(selected)

    async def last(self, session_id: str, n: int) -> list[Event]:
        self._check_open()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r:.40}", path="n")
        log = self._log(session_id)
        return log[-n:] if n else []

    async def last_seq(self, session_id: str) -> int:
        self._check_open()
        return len(self._log(session_id))

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        return await wait_for_events(
            self._notifier, session_id, after, timeout, lambda: self.read(session_id, after=after)
        )


def build(settings: MemorySettings, context: Any) -> MemoryStore:
    return MemoryStore()


@hookimpl
def asm_register_stores(register: Any) -> None:
    register("memory", build, settings=MemorySettings, description="in-process, nothing on disk")


@hookimpl(trylast=True)
def asm_default_store(kernel: Any) -> str:
    """The last resort when no installed plugin offers a default store (sessions are not kept)."""
    return "memory"
