"""Reading session and run records: from the record cache when it holds them, else from DuckDB.

Mixed into :class:`~asm_duckdb.store.DuckDBStore`. The cache is write-through and promoted only
after a commit, so a cached record is exactly what the file holds; a miss is one query on a
reader cursor (readers never fill the cache: only the writer knows a record is current).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from asm_kernel.errors import RunNotFoundError
from asm_kernel.model import Run, RunStatus, Session, SessionStatus
from asm_kernel.storage import check_page

from .caches import Records
from .codec import RUN_SELECT, SESSION_SELECT, run_from_row, session_from_row
from .planner import missing_session
from .reads import fetchall, fetchone

__all__ = ["RecordReads"]


class RecordReads:
    """``get_session``, ``list_sessions``, ``get_run``, ``list_runs``, ``find_run_by_idempotency_key``."""

    records: Records
    read_only: bool
    clock: Callable[[], datetime]
    _opened_at: datetime
    _check_open: Callable[[], None]
    _read: Callable[..., Awaitable[Any]]

    async def get_session(self, session_id: str) -> Session:
        self._check_open()
        state = self.records.sessions.get(session_id) if isinstance(session_id, str) else None
        if state is not None:
            return state.session
        row = await self._read(fetchone, f"SELECT {SESSION_SELECT} FROM sessions WHERE id = ?", [session_id])
        if row is None:
            raise missing_session(session_id)
        return session_from_row(row)

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
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(SessionStatus(status).value)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if tag is not None:
            where.append("list_contains(tags, ?)")
            params.append(tag)
        sql = f"SELECT {SESSION_SELECT} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        rows = await self._read(fetchall, sql, [*params, limit, offset])
        return [session_from_row(r) for r in rows]

    async def get_run(self, run_id: str) -> Run:
        self._check_open()
        entry = self.records.runs.get(run_id) if isinstance(run_id, str) else None
        if entry is not None:
            return entry[0]
        row = await self._read(fetchone, f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r:.80}")
        return run_from_row(row)

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
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if status is not None:
            where.append("status = ?")
            params.append(RunStatus(status).value)
        if lease_expired is not None:
            # Judged by the store's clock. A read-only store cannot end the leases of the process
            # that wrote the file at open (expire_leases), so it treats them as ended then.
            now = self.clock()
            cut = min(now, self._opened_at) if self.read_only else now
            expired = "(lease_expires_at IS NULL OR lease_expires_at <= ? OR lease_expires_at <= ?)"
            where.append("status = 'running' AND " + (expired if lease_expired else f"NOT {expired}"))
            params.extend([now, cut])
        sql = f"SELECT {RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        rows = await self._read(fetchall, sql, [*params, limit, offset])
        return [run_from_row(r) for r in rows]

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        self._check_open()
        row = await self._read(
            fetchone,
            f"SELECT {RUN_SELECT} FROM runs WHERE session_id = ? AND idempotency_key = ? "
            "ORDER BY created_at, id LIMIT 1",
            [session_id, key],
        )
        return None if row is None else run_from_row(row)
