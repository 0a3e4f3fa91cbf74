"""The store's connections: one psycopg_pool pool, transactions, reads, and their failures.

Pooled connections are in autocommit mode and a transaction is an explicit ``BEGIN ...
COMMIT``, so the runner knows exactly where a failure happened:

* the connection breaks before ``COMMIT`` was sent (a pooled connection the server had
  closed, a restart, a terminated backend, a network cut): the transaction dies with it, so
  nothing of it was stored; the pool drops the connection and the transaction is run again on
  another one, up to four attempts, then raised as :class:`~asm_postgres.errors.ConnectionLostError`
  with ``committed="no"``;
* a deadlock or serialization failure: the server rolled the transaction back; it is retried;
* any other failure before ``COMMIT``: the transaction is rolled back and the failure raised as
  a typed error (:func:`asm_postgres.errors.map_error`) - nothing of it was stored;
* the connection breaks while ``COMMIT`` is in flight: the outcome is unknown, nothing is
  retried here, and the error says so (``committed="unknown"``); the kernel re-sends the unit,
  which is idempotent by its events' ids.

A read is one autocommit statement, retried on a dead connection (reading twice is harmless).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from asm_kernel.errors import StoreClosedError
from attrs import define
from psycopg import errors as pe
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from .conninfo import ConnInfo
from .errors import connect_error, map_error

__all__ = ["Database", "PoolStats"]

T = TypeVar("T")
_ATTEMPTS = 4


@define
class PoolStats:
    """Counters for tests and benchmarks."""

    commits: int = 0  #: units committed (replays excluded)
    replays: int = 0  #: units answered from the stored events
    retries: int = 0  #: transactions re-run after a deadlock or serialization failure
    reconnects: int = 0  #: connections found broken before COMMIT (or a read), the work re-run on another


class Database:
    """A pool of connections to one target, and the two ways the store uses them."""

    def __init__(
        self,
        conninfo: ConnInfo,
        *,
        min_size: int,
        max_size: int,
        pool_timeout: float,
        connect_timeout: float,
        statement_timeout: float,
    ) -> None:
        self.conninfo = conninfo
        self.target = conninfo.target
        self.min_size = min_size
        self.max_size = max_size
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.stats = PoolStats()
        self._pool: AsyncConnectionPool[Any] | None = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def connect(self) -> Any:
        """A new autocommit connection outside the pool (migrations, tools), errors mapped."""
        try:
            return await psycopg.AsyncConnection.connect(
                self.conninfo.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
        except psycopg.Error as exc:
            raise connect_error(exc, self.target) from None

    async def open(self) -> None:
        timeout_ms = str(round(self.statement_timeout * 1000))

        async def configure(conn: Any) -> None:
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config('TimeZone', 'UTC', false)",
                [timeout_ms],
            )

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.conninfo.conninfo,
            kwargs={"autocommit": True},
            min_size=self.min_size,
            max_size=self.max_size,
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

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def forget(self) -> None:
        """Drop a pool whose event loop has closed (its connections went with it)."""
        self._pool = None

    def _closed(self) -> StoreClosedError:
        return StoreClosedError(f"the postgres store ({self.target}) is not open", hint="open() it first")

    def need_open(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise self._closed()
        return self._pool

    async def transaction(self, during: str, body: Callable[[Any], Awaitable[T]]) -> T:
        """``body(conn)`` between BEGIN and COMMIT, retried when that is safe (module docstring)."""
        pool = self.need_open()
        for attempt in range(1, _ATTEMPTS + 1):
            committing = False
            last = attempt == _ATTEMPTS
            try:
                async with pool.connection() as conn:
                    try:
                        await conn.execute("BEGIN")
                        result = await body(conn)
                        committing = True
                        await conn.execute("COMMIT")
                        return result
                    except psycopg.OperationalError:
                        if conn.broken and not committing and not last:
                            # Nothing of an uncommitted transaction survives its connection:
                            # run it again on another one (the pool drops the broken one).
                            self.stats.reconnects += 1
                            continue
                        if not conn.broken:
                            await _rollback(conn)
                        raise
                    except Exception:
                        if not conn.broken:
                            await _rollback(conn)
                        raise
                    except BaseException:  # cancelled mid-statement
                        _discard(conn)
                        raise
            except (pe.DeadlockDetected, pe.SerializationFailure):
                if last:
                    raise
                self.stats.retries += 1
                await asyncio.sleep(0.005 * attempt)
            except PoolClosed:
                raise self._closed() from None
            except PoolTimeout as exc:
                raise connect_error(exc, self.target) from None
            except psycopg.Error as exc:
                raise map_error(
                    exc, self.target, during=during, committing=committing, statement_timeout=self.statement_timeout
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def query(self, during: str, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One read statement (autocommit); a dead pooled connection is replaced and the read retried."""
        pool = self.need_open()
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    try:
                        cur = await conn.execute(statement, params)
                        return list(await cur.fetchall())
                    except psycopg.OperationalError:
                        if conn.broken and attempt < _ATTEMPTS:
                            self.stats.reconnects += 1
                            continue
                        raise
                    except Exception:
                        raise
                    except BaseException:  # cancelled mid-statement
                        _discard(conn)
                        raise
            except PoolClosed:
                raise self._closed() from None
            except PoolTimeout as exc:
                raise connect_error(exc, self.target) from None
            except psycopg.Error as exc:
                raise map_error(exc, self.target, during=during, statement_timeout=self.statement_timeout) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _discard(conn: Any) -> None:
    """Close a connection whose statement was interrupted (the task was cancelled).

    psycopg has asked the server to cancel the statement; a cancel request is a signal to the
    backend that can arrive after the statement ended and hit the next one this connection
    runs - another caller's, once the pool hands it out again. So it is closed here (the pool
    replaces it) rather than rolled back and reused.
    """
    conn.pgconn.finish()


async def _rollback(conn: Any) -> None:
    try:
        await conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the connection is gone; the server rolled back on its side
