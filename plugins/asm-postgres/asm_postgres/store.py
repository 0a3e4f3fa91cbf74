"""``use = "postgres"``: the shared store, for many processes on many machines.

Every operation runs on a connection from one psycopg_pool ``AsyncConnectionPool`` per store
(autocommit connections; a unit is an explicit ``BEGIN ... COMMIT``), so the store is safe to
share between tasks, and other processes may use the same schema at the same time: the
database's row locks, not this process, serialize writers (see :mod:`asm_postgres.units` and
:mod:`asm_postgres.claims`). Calls made from another thread's event loop are run on the loop
that opened the store (a pool belongs to one loop).

Failures reach the caller as the typed errors of :mod:`asm_postgres.errors`. A pooled
connection found dead when a transaction begins (the server restarted, an idle connection was
terminated) is replaced and the call retried, since nothing was sent; a deadlock or
serialization failure is retried too. Any other failure is raised, and whatever the
transaction wrote is rolled back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from asm_kernel.errors import RunNotFoundError, SessionNotFoundError, StoreClosedError, ValidationError
from asm_kernel.model import Event, Fence, Run, RunStatus, Session, SessionStatus
from asm_kernel.storage import check_claim, check_page, check_read_args, check_unit
from asm_kernel.writes import Committed, StoreCapabilities, WriteUnit
from attrs import define
from psycopg import errors as pe
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from . import claims, schema
from .conninfo import ConnInfo
from .errors import connect_error, map_error
from .listener import POLL_INTERVAL, Listener, Waiters
from .rows import check_text, check_unit_text, event_from_pg, run_from_row, session_from_row
from .sql import Statements
from .units import apply_unit, unique_violation

__all__ = ["PostgresStore", "PostgresStats"]

P = ParamSpec("P")
T = TypeVar("T")
_ATTEMPTS = 4


@define
class PostgresStats:
    """Counters for tests and benchmarks."""

    commits: int = 0  #: units committed (replays excluded)
    replays: int = 0  #: units answered from the stored events
    retries: int = 0  #: transactions re-run after a deadlock or serialization failure
    stale_connections: int = 0  #: pooled connections found dead at BEGIN and replaced


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
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.auto_upgrade = auto_upgrade
        self.durability = durability
        self.application_name = application_name
        self.stats = PostgresStats()
        self.capabilities = StoreCapabilities(
            shared=True,
            durable=True,
            durability="fast" if durability == "fast" else "safe",
            durability_modes=("safe", "fast"),
            leases=True,
            cross_process_notify=True,
            sql=True,
        )
        self._pool: AsyncConnectionPool[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters = Waiters()
        self._listener = Listener(
            conninfo.conninfo, self.sql.channel, self._waiters, application_name=f"{application_name}-listen"
        )

    def __repr__(self) -> str:
        return f"PostgresStore({self.target}, durability={self.durability!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    async def connect(self, *, autocommit: bool = True) -> Any:
        """A new connection outside the pool (for migrations and tools), errors mapped."""
        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo.conninfo, autocommit=autocommit, connect_timeout=max(1, round(self.connect_timeout))
            )
        except psycopg.Error as exc:
            raise connect_error(exc, self.target) from None

    @property
    def _by(self) -> str:
        from . import __version__

        return f"asm-postgres {__version__}"

    async def upgrade(self) -> tuple[int, int]:
        """Apply the missing migrations (``asm db upgrade``); returns (version before, after)."""
        conn = await self.connect()
        try:
            return await schema.upgrade(conn, self.target, by=self._by)
        except psycopg.Error as exc:
            raise map_error(exc, self.target, during=f"migrating schema {self.target.schema!r}") from None
        finally:
            await conn.close()

    async def schema_status(self) -> schema.SchemaStatus:
        conn = await self.connect()
        try:
            return await schema.status(conn, self.target.schema)
        except psycopg.Error as exc:
            raise map_error(exc, self.target, during="reading the schema version") from None
        finally:
            await conn.close()

    async def open(self) -> None:
        if self._pool is not None:
            return
        conn = await self.connect()  # a precise error (auth, database, unreachable) before any pool
        try:
            await schema.ensure(conn, self.target, auto_upgrade=self.auto_upgrade, by=self._by)
        except psycopg.Error as exc:
            raise map_error(exc, self.target, during=f"preparing schema {self.target.schema!r}") from None
        finally:
            await conn.close()
        timeout_ms = round(self.statement_timeout * 1000)

        async def configure(conn: Any) -> None:
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)",
                [str(timeout_ms)],
            )

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.conninfo.conninfo,
            kwargs={"autocommit": True},
            min_size=self.pool_min_size,
            max_size=self.pool_max_size,
            timeout=self.pool_timeout,
            configure=configure,
            open=False,
            name=f"asm-postgres-{self.target.schema}",
        )
        try:
            await pool.open(wait=True, timeout=max(self.connect_timeout, 1.0))
        except Exception as exc:
            await pool.close()
            raise connect_error(exc, self.target) from None
        self._pool = pool
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        await self._listener.close()
        self._waiters.wake_all()
        if pool is not None:
            await pool.close()
        self._loop = None

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(f"the postgres store ({self.target}) was closed", hint="open a new one")

    def _need_pool(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise StoreClosedError(f"the postgres store ({self.target}) is not open", hint="open() it first")
        return self._pool

    # -- running statements -------------------------------------------------------------------

    async def _transaction(self, during: str, body: Callable[[Any], Awaitable[T]]) -> T:
        """``body(conn)`` between BEGIN and COMMIT, retried when that is safe (module docstring)."""
        pool = self._need_pool()
        for attempt in range(1, _ATTEMPTS + 1):
            committing = False
            try:
                async with pool.connection() as conn:
                    try:
                        await conn.execute("BEGIN")
                    except psycopg.OperationalError:
                        if conn.broken and attempt < _ATTEMPTS:
                            self.stats.stale_connections += 1
                            continue  # the pool drops the broken connection; nothing was sent
                        raise
                    try:
                        result = await body(conn)
                        committing = True
                        await conn.execute("COMMIT")
                        return result
                    except Exception:
                        if not conn.broken:
                            await _rollback(conn)
                        raise
            except (pe.DeadlockDetected, pe.SerializationFailure):
                if attempt >= _ATTEMPTS:
                    raise
                self.stats.retries += 1
                await asyncio.sleep(0.005 * attempt)
            except PoolClosed:
                raise self._closed_error() from None
            except PoolTimeout as exc:
                raise connect_error(exc, self.target) from None
            except psycopg.Error as exc:
                raise map_error(
                    exc, self.target, during=during, committing=committing, statement_timeout=self.statement_timeout
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _query(self, during: str, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One read statement (autocommit); a dead pooled connection is replaced and the read retried."""
        pool = self._need_pool()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    try:
                        cur = await conn.execute(statement, params)
                        return list(await cur.fetchall())
                    except psycopg.OperationalError:
                        if conn.broken and attempt < _ATTEMPTS:
                            self.stats.stale_connections += 1
                            continue
                        raise
            except PoolClosed:
                raise self._closed_error() from None
            except PoolTimeout as exc:
                raise connect_error(exc, self.target) from None
            except psycopg.Error as exc:
                raise map_error(exc, self.target, during=during, statement_timeout=self.statement_timeout) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- writing ------------------------------------------------------------------------------

    @_on_loop
    async def commit(self, unit: WriteUnit) -> Committed:
        self._need_pool()
        payloads = check_unit(unit)
        check_unit_text(unit)
        fast = self.durability == "fast"

        async def body(conn: Any) -> Any:
            try:
                return await apply_unit(conn, self.sql, unit, payloads, fast=fast)
            except pe.UniqueViolation as exc:
                raise unique_violation(exc.diag.constraint_name, unit) from None

        plan = await self._transaction(f"writing to session {unit.session_id!r:.80}", body)
        if plan.replayed:
            self.stats.replays += 1
        else:
            self.stats.commits += 1
            if plan.new_events:
                self._waiters.wake(unit.session_id)  # this process's waiters need no round trip
        return plan.committed()  # type: ignore[no-any-return]

    async def append(
        self,
        session_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int | None = None,
        fence: Fence | None = None,
    ) -> list[Event]:
        if not isinstance(events, Sequence) or isinstance(events, str | bytes):
            raise ValidationError("append takes a sequence of Event", path="events")
        unit = WriteUnit(session_id, events, expected_seq=expected_seq, fence=fence)
        return list((await self.commit(unit)).events)

    @_on_loop
    async def claim_runs(
        self, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int = 1
    ) -> list[Run]:
        self._need_pool()
        check_claim(owner, limit, lease_ttl, max_running_per_session)
        check_text(owner, "owner")
        return await self._transaction(
            f"claiming runs for {owner!r:.80}",
            lambda conn: claims.claim(
                conn, self.sql, owner, limit=limit, lease_ttl=lease_ttl, max_running_per_session=max_running_per_session
            ),
        )

    @_on_loop
    async def renew_leases(self, fences: Sequence[Fence], ttl: float) -> list[str]:
        self._need_pool()
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
            raise ValidationError(f"ttl must be a number of seconds >= 0, got {ttl!r:.40}", path="ttl")
        for i, fence in enumerate(fences):
            if not isinstance(fence, Fence):
                raise ValidationError(f"expected Fence, got {type(fence).__name__}", path=f"fences[{i}]")
        usable = [f for f in fences if "\x00" not in f.run_id]  # NUL: no such run can exist
        kept = await self._transaction("renewing run leases", lambda conn: claims.renew(conn, self.sql, usable, ttl))
        return [f.run_id for f in fences if (f.run_id, f.token) not in kept]

    # -- sessions and runs --------------------------------------------------------------------

    @_on_loop
    async def get_session(self, session_id: str) -> Session:
        rows = [] if not _usable(session_id) else await self._query(
            "reading a session", self.sql.get_session, [session_id]
        )
        if not rows:
            raise SessionNotFoundError(f"no session {session_id!r:.80}", hint="`asm sessions list` shows the ids")
        return session_from_row(rows[0])

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
        check_page(limit, offset)
        where, params = _filters(
            ("status = %s", None if status is None else SessionStatus(status).value),
            ("agent_id = %s", agent_id),
            ("tags @> ARRAY[%s]::text[]", tag),
        )
        if any(isinstance(p, str) and "\x00" in p for p in params):
            return []
        from .rows import SESSION_COLS

        statement = f"SELECT {SESSION_COLS} FROM {self.sql.sessions}{where} "
        statement += "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
        rows = await self._query("listing sessions", statement, [*params, limit, offset])
        return [session_from_row(r) for r in rows]

    @_on_loop
    async def get_run(self, run_id: str) -> Run:
        rows = [] if not _usable(run_id) else await self._query("reading a run", self.sql.get_run, [run_id])
        if not rows:
            raise RunNotFoundError(f"no run {run_id!r:.80}")
        return run_from_row(rows[0])

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
        check_page(limit, offset)
        lease = None
        if lease_expired is True:
            lease = "status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())"
        elif lease_expired is False:
            lease = "status = 'running' AND lease_expires_at > clock_timestamp()"
        where, params = _filters(
            ("session_id = %s", session_id),
            ("status = %s", None if status is None else RunStatus(status).value),
            (lease, True if lease else None),
        )
        if any(isinstance(p, str) and "\x00" in p for p in params):
            return []
        from .rows import RUN_COLS

        statement = f"SELECT {RUN_COLS} FROM {self.sql.runs}{where} ORDER BY created_at, id LIMIT %s OFFSET %s"
        rows = await self._query("listing runs", statement, [*params, limit, offset])
        return [run_from_row(r) for r in rows]

    @_on_loop
    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        if not (_usable(session_id) and _usable(key)):
            return None
        rows = await self._query("finding a run by idempotency key", self.sql.run_by_key, [session_id, key])
        return run_from_row(rows[0]) if rows else None

    # -- reading the log ----------------------------------------------------------------------

    async def _exists(self, session_id: str) -> int:
        rows = [] if not _usable(session_id) else await self._query(
            "reading a session", self.sql.session_exists, [session_id]
        )
        if not rows:
            raise SessionNotFoundError(f"no session {session_id!r:.80}")
        return int(rows[0][0])

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
        check_read_args(after, before, limit, types, run_id)
        if not _usable(session_id):
            raise SessionNotFoundError(f"no session {session_id!r:.80}")
        where, params = _filters(
            ("seq < %s", before),
            ("type = ANY(%s::text[])", None if types is None else [t for t in types if "\x00" not in t]),
            ("run_id = %s", run_id),
        )
        from .rows import EVENT_COLS

        statement = f"SELECT {EVENT_COLS} FROM {self.sql.events} WHERE session_id = %s AND seq > %s"
        statement += where.replace(" WHERE ", " AND ", 1) + " ORDER BY seq LIMIT %s"
        params.append(limit)  # LIMIT NULL is no limit: one statement text, one prepared plan
        rows = await self._query(f"reading session {session_id!r:.80}", statement, [session_id, after, *params])
        if not rows:
            await self._exists(session_id)
        return [event_from_pg(r) for r in rows]

    @_on_loop
    async def last(self, session_id: str, n: int) -> list[Event]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r:.40}", path="n")
        rows = [] if not (n and _usable(session_id)) else await self._query(
            f"reading session {session_id!r:.80}", self.sql.last, [session_id, n]
        )
        if not rows:
            await self._exists(session_id)
        return [event_from_pg(r) for r in rows]

    @_on_loop
    async def last_seq(self, session_id: str) -> int:
        return await self._exists(session_id)

    @_on_loop
    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        events = await self.read(session_id, after=after)
        if events or timeout <= 0:
            return events
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._listener.ensure(timeout=min(timeout, self.connect_timeout))
        fut = self._waiters.register(session_id)
        try:
            while True:
                # Registered before reading: an append landing in between still wakes us.
                events = await self.read(session_id, after=after)
                remaining = deadline - loop.time()
                if events or remaining <= 0 or self._pool is None:
                    return events
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


def _usable(value: Any) -> bool:
    """A lookup key that can match a stored row (text cannot hold NUL; wrong types match nothing)."""
    return isinstance(value, str) and "\x00" not in value


def _filters(*conditions: tuple[str | None, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a AND b`` over the conditions whose value is not None, and their parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for clause, value in conditions:
        if clause is None or value is None:
            continue
        parts.append(clause)
        if "%s" in clause:
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


async def _rollback(conn: Any) -> None:
    try:
        await conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the connection is gone; the server rolled back on its side
