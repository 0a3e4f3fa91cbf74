"""Live subscriptions across processes: ``NOTIFY`` after each commit, one ``LISTEN`` per store.

**Announcing.** When a unit that stored events has committed, the store queues ``(session,
last seq)`` with its :class:`Announcer`, which sends everything queued in one statement
(``SELECT pg_notify(channel, '<seq>:<session id>') FROM unnest(...)``), at most one statement
per :data:`ANNOUNCE_INTERVAL` (5 ms): what commits meanwhile goes out together, one
notification per session. Not notifying inside the unit's own transaction is deliberate:
PostgreSQL serializes the commits of notifying transactions with a database-wide lock held
through their WAL flush, so a NOTIFY in every append would make every writer of the database
wait for every other one. A notification is therefore sent only after
its events are visible, and a process that dies between its commit and its announcement costs
waiters elsewhere latency (until their next poll or timeout), never an event.

**Listening.** A store keeps one dedicated autocommit connection listening on its schema's
channel and wakes the waiters of the named session; waiters then **read from their cursor**
(``after``), so a notification that was missed, merged or spurious changes nothing but latency.
While the listening connection is down (a restart, a network cut) waiters poll instead, and
every waiter is woken when listening resumes, so an append made during the outage is seen. The
connection is opened on the first ``wait`` (a store that never waits never holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from .conninfo import scrub

__all__ = ["Waiters", "Listener", "Announcer", "POLL_INTERVAL", "ANNOUNCE_INTERVAL"]

log = logging.getLogger("asm.postgres")

#: How often waiters re-read while no notification can reach them (the listener is down).
POLL_INTERVAL = 0.5
_BACKOFF_MAX = 5.0
#: Shortest time between two notify statements of one store: appends closer together than this
#: are announced together (a waiter elsewhere learns of them at most this much later).
ANNOUNCE_INTERVAL = 0.005
#: Longest notification payload PostgreSQL takes is 8000 bytes; longer session ids wake everyone.
_MAX_NOTE = 7900


class Waiters:
    """Futures of the tasks waiting for a session's log to grow (all on the store's loop)."""

    def __init__(self) -> None:
        self._by_session: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_session.values())

    def register(self, session_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_session[session_id].add(fut)
        return fut

    def unregister(self, session_id: str, fut: asyncio.Future[None]) -> None:
        futs = self._by_session.get(session_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._by_session[session_id]

    def wake(self, session_id: str) -> None:
        for fut in self._by_session.pop(session_id, ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self) -> None:
        for session_id in list(self._by_session):
            self.wake(session_id)


class Listener:
    """The store's listening connection (see the module docstring)."""

    def __init__(self, conninfo: str, channel: str, waiters: Waiters, *, application_name: str) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._waiters = waiters
        self._application_name = application_name
        self._task: asyncio.Task[None] | None = None
        self._tried: asyncio.Event | None = None
        self.listening = False
        self.notifications = 0
        self.reconnects = 0
        self.backend_pid: int | None = None

    def __repr__(self) -> str:
        return f"Listener(channel={self._channel!r}, listening={self.listening})"

    async def ensure(self, timeout: float = 10.0) -> bool:
        """Start listening if not yet; True once ``LISTEN`` is in place (False: waiters must poll)."""
        if self._task is None or self._task.done():
            self._tried = asyncio.Event()
            name = f"asm-postgres-listen-{self._channel}"
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)
        if self.listening:
            return True
        assert self._tried is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), timeout)
        return self.listening

    async def _run(self) -> None:
        import psycopg

        delay = 0.1
        first = True
        while True:
            conn: Any = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=self._application_name
                )
                await conn.execute(f'LISTEN "{self._channel}"')
                self.backend_pid = conn.info.backend_pid
                self.listening = True
                delay = 0.1
                if not first:
                    self.reconnects += 1
                first = False
                assert self._tried is not None
                self._tried.set()
                # Appends made while nobody listened were not notified: let every waiter re-read.
                self._waiters.wake_all()
                async for note in conn.notifies():
                    self.notifications += 1
                    _, _, session_id = note.payload.partition(":")
                    if session_id == "*":
                        self._waiters.wake_all()
                    else:
                        self._waiters.wake(session_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    log.warning("asm-postgres: listening on %s stopped (%s); waiters poll until it is back",
                                self._channel, scrub(str(exc)))
                self.listening = False
                self._waiters.wake_all()
                if self._tried is not None:
                    self._tried.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.listening = False


class Announcer:
    """Sends the notifications of committed appends, batched (see the module docstring).

    ``send(notes)`` runs one ``pg_notify`` statement for a batch of payloads; a failure is
    logged and the batch dropped (waiters read from their cursors; they lose latency, not data).
    """

    def __init__(self, send: Callable[[list[str]], Awaitable[Any]]) -> None:
        self._send = send
        self._pending: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._last = float("-inf")
        self.sent = 0  #: notify statements run
        self.notes = 0  #: notifications sent

    def __repr__(self) -> str:
        return f"Announcer(pending={len(self._pending)}, sent={self.sent})"

    def announce(self, session_id: str, seq: int) -> None:
        """Queue ``session_id``'s new last seq; sent as soon as the batch before it is out."""
        if self._pending.get(session_id, 0) < seq:
            self._pending[session_id] = seq
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="asm-postgres-announce")

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            # At most one notify statement per interval: a fast writer's appends share one.
            wait = self._last + ANNOUNCE_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = loop.time()
            batch, self._pending = self._pending, {}
            notes = []
            for session_id, seq in batch.items():
                note = f"{seq}:{session_id}"
                notes.append(note if len(note.encode()) <= _MAX_NOTE else f"{seq}:*")
            try:
                await self._send(notes)
            except Exception as exc:
                log.warning("asm-postgres: %d notification(s) not sent (%s); other processes' waiters "
                            "see those events at their next poll", len(notes), scrub(str(exc)))
                continue
            self.sent += 1
            self.notes += len(notes)

    async def flush(self) -> None:
        """Send what is queued now (the store calls it before closing)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
