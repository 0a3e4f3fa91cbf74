"""``use = "postgres"``: the shared store, for many processes on many machines.

Every operation runs on a connection of the store's pool (:mod:`asm_postgres.pool`), so the store
is safe to share between tasks, and other processes may use the same schema at the same time:
the database's row locks, not this process, serialize writers (:mod:`asm_postgres.units`,
:mod:`asm_postgres.claims`). ``wait`` is woken across processes by ``LISTEN/NOTIFY``
(:mod:`asm_postgres.listener`). Calls made from another thread's event loop are run on the loop
that opened the store (a pool and its connections belong to one loop).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from asm_kernel.errors import RunNotFoundError, SessionNotFoundError, StoreClosedError, ValidationError
from asm_kernel.model import Event, Fence, Run, RunStatus, Session, SessionStatus
from asm_kernel.storage import append_unit, check_claim, check_page, check_read_args, check_unit
from asm_kernel.writes import Committed, Durability, StoreCapabilities, WriteUnit

from . import claims, schema
from .conninfo import ConnInfo
from .errors import map_error
from .listener import POLL_INTERVAL, Announcer, Listener, Waiters
from .pool import Database, PoolStats
from .rows import check_text, check_unit_text, event_from_pg, run_from_row, session_from_row
from .sql import Statements, present
from .units import Duplicate, apply_unit

__all__ = ["PostgresStore", "PostgresStats"]

P = ParamSpec("P")
T = TypeVar("T")

#: The store's counters (kept by its connection pool).
PostgresStats = PoolStats


def _on_loop(
    method: Callable[Concatenate[PostgresStore, P], Awaitable[T]],
) -> Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, T]]:
    """Run the call on the loop that opened the store (a pool and its connections live there)."""

    @functools.wraps(method)
    async def call(self: PostgresStore, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            return await method(self, *args, **kwargs)
        if loop.is_closed() or not loop.is_running():
            raise StoreClosedError(
                f"the store was opened on an event loop that is no longer running ({self.target})",
                hint="open one store per event loop, and use it while that loop runs",
            )
        coro: Coroutine[Any, Any, T] = method(self, *args, **kwargs)  # type: ignore[assignment]
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    return call


def _usable(value: Any) -> bool:
    """A lookup key that can match a stored row (text cannot hold NUL; wrong types match nothing)."""
    return isinstance(value, str) and "\x00" not in value


class PostgresStore:
    """The Postgres store (see the module docstring and docs/plugins/postgres.md)."""

    def __init__(
        self,
        conninfo: ConnInfo,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        statement_timeout: float = 30.0,
        auto_upgrade: bool = True,
        durability: str = "safe",
        application_name: str = "asm",
    ) -> None:
        self.conninfo = conninfo
        self.target = conninfo.target
        self.sql = Statements(self.target.schema)
        self.auto_upgrade = auto_upgrade
        self.durability: Durability = "fast" if durability == "fast" else "safe"
        self.db = Database(
            conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        self.stats = self.db.stats
        self.capabilities = StoreCapabilities(
            shared=True,
            durable=True,
            durability=self.durability,
            durability_modes=("safe", "fast"),
            leases=True,
            cross_process_notify=True,
            sql=True,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._application_name = application_name
        self._loop_helpers()

    def _loop_helpers(self) -> None:
        """The waiters, listener and announcer: tasks and futures of the loop the store runs on."""
        self._waiters = Waiters()
        self._listener = Listener(
            self.conninfo.conninfo,
            self.sql.channel,
            self._waiters,
            application_name=f"{self._application_name}-listen",
        )
        self._announcer = Announcer(
            lambda notes: self.db.query("notifying other processes", self.sql.notify, [self.sql.channel, notes])
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.target}, durability={self.durability!r})"

    # -- lifecycle and schema -----------------------------------------------------------------

    @property
    def _by(self) -> str:
        from . import __version__

        return f"asm-postgres {__version__}"

    async def _on_connection(self, during: str, body: Callable[[Any], Awaitable[T]]) -> T:
        conn = await self.db.connect()  # a precise error (auth, database, unreachable) first
        try:
            return await body(conn)
        except psycopg.Error as exc:
            raise map_error(exc, self.target, during=during) from None
        finally:
            await conn.close()

    async def upgrade(self) -> tuple[int, int]:
        """Apply the missing migrations (``asm db upgrade``); returns (version before, after)."""
        return await self._on_connection(
            f"migrating schema {self.target.schema!r}", lambda c: schema.upgrade(c, self.target, by=self._by)
        )

    async def schema_status(self) -> schema.SchemaStatus:
        return await self._on_connection("reading the schema version", lambda c: schema.status(c, self.target.schema))

    async def open(self) -> None:
        if self.db.is_open:
            return
        await self._on_connection(
            f"preparing schema {self.target.schema!r}",
            lambda c: schema.ensure(c, self.target, auto_upgrade=self.auto_upgrade, by=self._by),
        )
        await self.db.open()
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        loop = self._loop
        if loop is not None and loop is not asyncio.get_running_loop():
            if loop.is_running():  # the pool's tasks live there: close it there
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.close(), loop))
                return
            # Its loop is gone, and the pool's, listener's and waiters' tasks with it: forget them.
            self.db.forget()
            self._loop_helpers()
            self._loop = None
            return
        if self.db.is_open:
            await self._announcer.flush()
        await self._listener.close()
        self._waiters.wake_all()
        await self.db.close()
        self._loop = None

    # -- writing ------------------------------------------------------------------------------

    @_on_loop
    async def commit(self, unit: WriteUnit) -> Committed:
        self.db.need_open()
        payloads = check_unit(unit)
        check_unit_text(unit)
        fast = self.durability == "fast"

        during = f"writing to session {unit.session_id!r:.80}"
        try:
            plan = await self.db.transaction(
                during, lambda conn: apply_unit(conn, self.sql, unit, payloads, fast=fast)
            )
        except Duplicate:  # a retried unit: again, looking its event ids up
            plan = await self.db.transaction(
                during, lambda conn: apply_unit(conn, self.sql, unit, payloads, fast=fast, lookup=True)
            )
        if plan.replayed:
            self.stats.replays += 1
        else:
            self.stats.commits += 1
            if plan.new_events:
                self._waiters.wake(unit.session_id)  # this process's waiters need no round trip
                self._announcer.announce(unit.session_id, plan.last_seq)
        return plan.committed()  # type: ignore[no-any-return]

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
    ) -> list[Event]:
        unit = append_unit(session_id, events, expected_seq=expected_seq, fence=fence)
        return list((await self.commit(unit)).events)

    @_on_loop
    async def claim_runs(
        self, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int = 1
    ) -> list[Run]:
        self.db.need_open()
        check_claim(owner, limit, lease_ttl, max_running_per_session)
        check_text(owner, "owner")

        async def body(conn: Any) -> list[Run]:
            return await claims.claim(
                conn, self.sql, owner, limit=limit, lease_ttl=lease_ttl, max_running_per_session=max_running_per_session
            )

        return await self.db.transaction(f"claiming runs for {owner!r:.80}", body)

    @_on_loop
    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        self.db.need_open()
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
            raise ValidationError(f"ttl must be a number of seconds >= 0, got {ttl!r:.40}", path="ttl")
        for i, fence in enumerate(fences):
            if not isinstance(fence, Fence):
                raise ValidationError(f"expected Fence, got {type(fence).__name__}", path=f"fences[{i}]")
        usable = [f for f in fences if _usable(f.run_id)]
        kept = await self.db.transaction("renewing run leases", lambda conn: claims.renew(conn, self.sql, usable, ttl))
        return [f.run_id for f in fences if (f.run_id, f.token) not in kept]

    # -- sessions and runs --------------------------------------------------------------------

    @_on_loop
    async def get_session(self, session_id: str) -> Session:
        self.db.need_open()
        if _usable(session_id):
            rows = await self.db.query("reading a session", self.sql.get_session, [session_id])
            if rows:
                return session_from_row(rows[0])
        raise SessionNotFoundError(f"no session {session_id!r:.80}", hint="`asm sessions list` shows the ids")

    @_on_loop
    async def list_sessions(
        self,
        *,
        status: SessionStatus | None = None,
        agent_id: str | None = None,
        tag: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Session]:
        self.db.need_open()
        check_page(limit, offset)
        wanted = present(None if status is None else SessionStatus(status).value, agent_id, tag)
        if not all(_usable(v) for v in wanted):
            return []
        statement = self.sql.list_sessions(
            status=status is not None, agent_id=agent_id is not None, tag=tag is not None
        )
        rows = await self.db.query("listing sessions", statement, [*wanted, limit, offset])
        return [session_from_row(r) for r in rows]

    @_on_loop
    async def get_run(self, run_id: str) -> Run:
        self.db.need_open()
        if _usable(run_id):
            rows = await self.db.query("reading a run", self.sql.get_run, [run_id])
            if rows:
                return run_from_row(rows[0])
        raise RunNotFoundError(f"no run {run_id!r:.80}")

    @_on_loop
    async def list_runs(
        self,
        *,
        session_id: str | None = None,
        status: RunStatus | None = None,
        lease_expired: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Run]:
        self.db.need_open()
        check_page(limit, offset)
        wanted = present(session_id, None if status is None else RunStatus(status).value)
        if not all(_usable(v) for v in wanted):
            return []
        statement = self.sql.list_runs(
            session_id=session_id is not None, status=status is not None, lease_expired=lease_expired
        )
        rows = await self.db.query("listing runs", statement, [*wanted, limit, offset])
        return [run_from_row(r) for r in rows]

    @_on_loop
    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        self.db.need_open()
        if not (_usable(session_id) and _usable(key)):
            return None
        rows = await self.db.query("finding a run by idempotency key", self.sql.run_by_key, [session_id, key])
        return run_from_row(rows[0]) if rows else None

    # -- reading the log ----------------------------------------------------------------------

    async def _last_seq(self, session_id: str) -> int:
        if _usable(session_id):
            rows = await self.db.query("reading a session", self.sql.session_exists, [session_id])
            if rows:
                return int(rows[0][0])
        raise SessionNotFoundError(f"no session {session_id!r:.80}")

    @_on_loop
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
        self.db.need_open()
        check_read_args(after, before, limit, types, run_id)
        rows: list[tuple[Any, ...]] = []
        names = [t for t in types if _usable(t)] if types else None  # no types (or []) is no filter
        possible = (run_id is None or _usable(run_id)) and (not types or names)
        if _usable(session_id) and possible:
            statement = self.sql.read_events(
                before=before is not None, types=names is not None, run_id=run_id is not None
            )
            params = [session_id, after, *present(before, names, run_id), limit]
            rows = await self.db.query(f"reading session {session_id!r:.80}", statement, params)
        if not rows:
            await self._last_seq(session_id)  # an empty page, or no such session?
        return [event_from_pg(r) for r in rows]

    @_on_loop
    async def last(self, session_id: str, n: int) -> list[Event]:
        self.db.need_open()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r:.40}", path="n")
        rows: list[tuple[Any, ...]] = []
        if n and _usable(session_id):
            rows = await self.db.query(f"reading session {session_id!r:.80}", self.sql.last, [session_id, n])
        if not rows:
            await self._last_seq(session_id)
        return [event_from_pg(r) for r in rows]

    @_on_loop
    async def last_seq(self, session_id: str) -> int:
        self.db.need_open()
        return await self._last_seq(session_id)

    @_on_loop
    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        """Events after ``after``, waiting up to ``timeout`` seconds for some (any process's)."""
        events = await self.read(session_id, after=after)
        if events or timeout <= 0:
            return events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._listener.ensure(timeout=min(timeout, self.db.connect_timeout))
        fut = self._waiters.register(session_id)
        try:
            while True:
                # Registered before reading: an append landing in between still wakes us.
                events = await self.read(session_id, after=after)
                remaining = deadline - loop.time()
                if events or remaining <= 0 or not self.db.is_open:
                    return events
                # While nothing is listening a notification can be lost: poll meanwhile.
                step = remaining if self._listener.listening else min(remaining, POLL_INTERVAL)
                try:
                    await asyncio.wait_for(asyncio.shield(fut), step)
                except TimeoutError:
                    pass
                if fut.done():
                    self._waiters.unregister(session_id, fut)
                    fut = self._waiters.register(session_id)
        finally:
            self._waiters.unregister(session_id, fut)
