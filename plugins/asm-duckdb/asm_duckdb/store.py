"""``use = "duckdb"``: sessions, runs and the event log in one DuckDB file.

How it is fast and safe:

* **One writer thread** owns the DuckDB connection used for writes. Every write (append,
  session and run changes) is a request put on a queue; the writer drains *all* pending
  requests - from any session, thread or event loop - into **one transaction** (group commit),
  checks each request in memory, inserts the rows, commits once, then resolves each caller's
  future. A bad request (unknown session, seq conflict, duplicate id) fails alone; a failed
  commit fails the whole group and rolls the in-memory seq cache back.
* **Seqs** come from an in-memory per-session cache loaded from ``MAX(seq)`` on first use.
  Event-id idempotency is checked optimistically: rows are inserted without a lookup and the
  unique index on ``events.id`` catches a retried id, in which case the group is rolled back
  and redone with explicit lookups (a retry then returns the stored events and their seqs).
* **Write-behind** (``durability = "fast"``): an append made only of stream deltas
  (:data:`asm_kernel.events.STREAM_TYPES`) is acknowledged as soon as its rows are in the open
  transaction; the writer commits them within :data:`BEHIND_MAX_DELAY` seconds, at the next
  awaited append, before any read of that session, and on ``close()``. A crash can lose those
  (and only those) acknowledged deltas.
* **Reads** run on a small thread pool, each on its own cursor, and see every acknowledged
  append (a read of a session with write-behind rows pending first asks for a commit).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import logging
import queue
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from asm_kernel.errors import (
    AlreadyExistsError,
    AsmError,
    RunNotFoundError,
    SeqConflictError,
    SessionNotFoundError,
    StorageError,
    StoreClosedError,
    StoreCorruptError,
    StoreLockedError,
    StoreReadOnlyError,
    ValidationError,
)
from asm_kernel.events import STREAM_TYPES
from asm_kernel.model import Event, Run, RunStatus, Session, SessionStatus
from asm_kernel.serialization import dumps, from_dict, loads, to_dict
from asm_kernel.storage import Notifier, check_batch, check_read_args, event_from_row, event_row, wait_for_events
from attrs import evolve

__all__ = ["DuckDBStore", "DuckDBStats", "SCHEMA_VERSION", "BEHIND_MAX_DELAY", "BEHIND_MAX_ROWS"]

log = logging.getLogger("asm.duckdb")

T = TypeVar("T")

#: Version of the tables below, kept in ``asm_meta``; a newer file is refused.
SCHEMA_VERSION = 1
#: Longest time an acknowledged write-behind event stays uncommitted (fast mode).
BEHIND_MAX_DELAY = 0.05
#: Most acknowledged write-behind events kept uncommitted before a commit is forced.
BEHIND_MAX_ROWS = 2000
#: Cap on the events gathered into one group commit.
MAX_GROUP_EVENTS = 20_000
#: Reader threads (each with its own cursor).
READERS = 3

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO = timedelta(0)

_SCHEMA = [
    "CREATE TABLE asm_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE sessions (
        id VARCHAR PRIMARY KEY,
        agent_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        metadata VARCHAR NOT NULL,
        tags VARCHAR[] NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL)""",
    """CREATE TABLE runs (
        id VARCHAR PRIMARY KEY,
        session_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        input VARCHAR,
        output VARCHAR,
        usage VARCHAR NOT NULL,
        cost DOUBLE,
        provider VARCHAR,
        model VARCHAR,
        stop_reason VARCHAR,
        error VARCHAR,
        idempotency_key VARCHAR,
        metadata VARCHAR NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ)""",
    "CREATE INDEX runs_session_idempotency ON runs (session_id, idempotency_key)",
    """CREATE TABLE events (
        id VARCHAR NOT NULL,
        session_id VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        run_id VARCHAR,
        type VARCHAR NOT NULL,
        payload VARCHAR NOT NULL,
        ts TIMESTAMPTZ NOT NULL,
        schema_version INTEGER NOT NULL,
        PRIMARY KEY (session_id, seq))""",
    "CREATE UNIQUE INDEX events_id ON events (id)",
]
_TABLES = {"asm_meta", "sessions", "runs", "events"}

_EVENT_COLS = "id, session_id, seq, run_id, type, payload, epoch_us(ts), schema_version"
_SESSION_COLS = "id, agent_id, status, metadata, tags, epoch_us(created_at), epoch_us(updated_at)"
_RUN_COLS = (
    "id, session_id, status, input, output, usage, cost, provider, model, stop_reason, error, "
    "idempotency_key, metadata, epoch_us(created_at), epoch_us(started_at), epoch_us(finished_at)"
)
_TS = "?::TIMESTAMPTZ"
_INSERT_SESSION = f"INSERT INTO sessions VALUES (?, ?, ?, ?, ?::VARCHAR[], {_TS}, {_TS})"
_UPDATE_SESSION = (
    f"UPDATE sessions SET agent_id = ?, status = ?, metadata = ?, tags = ?::VARCHAR[], created_at = {_TS}, "
    f"updated_at = {_TS} WHERE id = ? RETURNING id"
)
_INSERT_RUN = f"INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {_TS}, {_TS}, {_TS})"
_UPDATE_RUN = (
    "UPDATE runs SET session_id = ?, status = ?, input = ?, output = ?, usage = ?, cost = ?, provider = ?, "
    f"model = ?, stop_reason = ?, error = ?, idempotency_key = ?, metadata = ?, created_at = {_TS}, "
    f"started_at = {_TS}, finished_at = {_TS} WHERE id = ? RETURNING id"
)
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_EVENTS_UNNEST = (
    "INSERT INTO events SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::BIGINT[]), "
    "unnest($4::VARCHAR[]), unnest($5::VARCHAR[]), unnest($6::VARCHAR[]), "
    "unnest($7::TIMESTAMPTZ[]), unnest($8::INTEGER[])"
)

_PID = re.compile(r"PID (\d+)")


def _utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime for DuckDB (naive datetimes are taken as UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.utcoffset() == _ZERO else value.astimezone(UTC)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def _json(value: Any, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{what} is not JSON-serializable: {exc}", path=what,
            hint="use str, int, float, bool, None, lists and dicts",
        ) from None


def _page(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValidationError(f"limit must be an integer >= 0, got {limit!r}", path="limit")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValidationError(f"offset must be an integer >= 0, got {offset!r}", path="offset")


def _event(row: Sequence[Any]) -> Event:
    ident, session_id, seq, run_id, type_, payload, us, version = row
    return event_from_row((ident, session_id, seq, run_id, type_, payload, _dt(us), version))


def _session_params(s: Session) -> list[Any]:
    return [
        s.id, s.agent_id, SessionStatus(s.status).value, _json(s.metadata, "metadata"),
        [str(t) for t in s.tags], _utc(s.created_at), _utc(s.updated_at),
    ]


def _session(row: Sequence[Any]) -> Session:
    ident, agent_id, status, metadata, tags, created, updated = row
    try:
        return Session(
            id=ident, agent_id=agent_id, status=SessionStatus(status), metadata=loads(metadata),
            tags=tuple(tags or ()), created_at=_dt(created), updated_at=_dt(updated),  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as exc:
        raise StoreCorruptError(f"stored session {ident!r} cannot be read: {exc}") from None


def _run_params(run: Run) -> list[Any]:
    def record(value: Any, what: str) -> str | None:
        return None if value is None else _json(to_dict(value), what)

    return [
        run.id, run.session_id, RunStatus(run.status).value, record(run.input, "input"),
        record(run.output, "output"), _json(to_dict(run.usage), "usage"), run.cost, run.provider,
        run.model, run.stop_reason, None if run.error is None else _json(run.error, "error"),
        run.idempotency_key, _json(run.metadata, "metadata"), _utc(run.created_at),
        _utc(run.started_at), _utc(run.finished_at),
    ]


def _run(row: Sequence[Any]) -> Run:
    (ident, session_id, status, input_, output, usage, cost, provider, model, stop_reason, error,
     key, metadata, created, started, finished) = row
    try:
        data = {
            "id": ident, "session_id": session_id, "status": status,
            "input": None if input_ is None else loads(input_),
            "output": None if output is None else loads(output),
            "usage": loads(usage), "cost": cost, "provider": provider, "model": model,
            "stop_reason": stop_reason, "error": None if error is None else loads(error),
            "idempotency_key": key, "metadata": loads(metadata), "created_at": _dt(created),
            "started_at": _dt(started), "finished_at": _dt(finished),
        }
        return from_dict(data, Run)
    except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
        raise StoreCorruptError(f"stored run {ident!r} cannot be read: {exc}") from None


@dataclass
class DuckDBStats:
    """Counters kept by the writer thread (read them for tests and benchmarks)."""

    commits: int = 0  #: transactions committed
    groups: int = 0  #: batches of requests drained from the queue
    appends: int = 0  #: append calls that stored at least one new event
    events: int = 0  #: events inserted
    behind_acks: int = 0  #: appends acknowledged before their commit (fast mode)
    largest_group: int = 0  #: most requests handled by one group
    retries: int = 0  #: groups redone with id lookups after a duplicate id
    failed_commits: int = 0


@dataclass(eq=False)
class _Req:
    kind: str  # append | create_session | update_session | create_run | update_run | flush | stop
    fut: cf.Future[Any]
    session_id: str = ""
    events: Sequence[Event] = ()
    payloads: Sequence[str] = ()
    expected_seq: int | None = None
    obj: Any = None
    params: list[Any] | None = None
    behind: bool = False
    rows: list[tuple[Any, ...]] | None = None  # event rows this append inserted


_OPEN_FILES: set[str] = set()
_OPEN_FILES_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[DuckDBStore] = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    """Flush write-behind events of stores nobody closed before the interpreter exits."""
    for store in list(_LIVE):
        try:
            store._close_sync(timeout=10.0)
        except Exception:  # pragma: no cover - best effort at exit
            log.exception("closing %r at exit failed", store)


class DuckDBStore:
    """The asm store in one DuckDB file. See the module docstring for the design."""

    #: One process holds the file for writing, so the kernel may cache sessions and runs.
    exclusive = True

    def __init__(
        self,
        path: str | Path,
        *,
        durability: str = "safe",
        lock_timeout: float = 0.0,
        read_only: bool = False,
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        if durability not in ("safe", "fast"):
            raise ValueError(f"durability must be 'safe' or 'fast', got {durability!r}")
        self.path = Path(path).expanduser().absolute()
        self.durability = durability
        self.lock_timeout = float(lock_timeout)
        self.read_only = bool(read_only)
        self.memory_limit = memory_limit
        self.threads = threads
        self.stats = DuckDBStats()
        self._notifier = Notifier()
        self._submit_lock = threading.Lock()
        self._state = "new"  # new | open | closing | closed
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._cursors: queue.SimpleQueue[duckdb.DuckDBPyConnection] = queue.SimpleQueue()
        self._all_cursors: list[duckdb.DuckDBPyConnection] = []
        self._readers: cf.ThreadPoolExecutor | None = None
        self._queue: queue.SimpleQueue[_Req] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._stop_fut: cf.Future[None] | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        # Writer-thread state. Other threads only ever read _acked and _behind_sessions.
        self._seq: dict[str, int] = {}  # working last seq (includes the open transaction)
        self._committed: dict[str, int] = {}  # last committed seq
        self._acked: dict[str, int] = {}  # last acknowledged seq (committed or written behind)
        self._dirty: set[str] = set()  # sessions changed in the open transaction
        self._in_txn = False
        self._behind_rows: list[tuple[Any, ...]] = []
        self._behind_sessions: set[str] = set()
        self._behind_deadline = 0.0

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    @property
    def _fast(self) -> bool:
        return self.durability == "fast"

    # -- opening and closing ------------------------------------------------------------------

    async def open(self) -> None:
        with self._submit_lock:
            if self._state in ("open", "closing"):
                return
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        key = str(self.path)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        next_log = 0.0
        claimed = False
        conn: duckdb.DuckDBPyConnection | None = None
        try:
            while True:
                holder = None
                with _OPEN_FILES_LOCK:
                    if key not in _OPEN_FILES:
                        _OPEN_FILES.add(key)
                        claimed = True
                    else:
                        holder = "another asm store in this process"
                if claimed:
                    try:
                        conn = self._connect()
                        break
                    except _Locked as exc:
                        holder = exc.holder
                        with _OPEN_FILES_LOCK:
                            _OPEN_FILES.discard(key)
                        claimed = False
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    waited = f" after waiting {self.lock_timeout:g} s" if self.lock_timeout > 0 else ""
                    raise StoreLockedError(
                        f"store file {key} is in use by {holder}{waited}",
                        hint="DuckDB lets one process at a time open the file: stop the other asm "
                        "process or let it finish; store.lock_timeout sets how long to wait",
                        file=key,
                    )
                if now >= next_log:
                    log.info(
                        "store file %s is in use by %s; retrying for up to %.1f s more",
                        key, holder, remaining,
                    )
                    next_log = now + 1.0
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.25)
            self._init_schema(conn)
            cursors = [conn.cursor() for _ in range(READERS)]
        except BaseException:
            if conn is not None:
                try:
                    conn.close()
                except duckdb.Error:
                    pass
            if claimed:
                with _OPEN_FILES_LOCK:
                    _OPEN_FILES.discard(key)
            raise
        self._conn = conn
        self._all_cursors = cursors
        self._cursors = queue.SimpleQueue()
        for cur in cursors:
            self._cursors.put(cur)
        self._queue = queue.SimpleQueue()
        self._reset_state()
        self._readers = cf.ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="asm-duckdb-read")
        self._writer = threading.Thread(
            target=self._writer_main, name=f"asm-duckdb-writer:{self.path.name}", daemon=True
        )
        with self._submit_lock:
            self._state = "open"
        self._writer.start()
        _LIVE.add(self)
        log.debug("opened %s (durability=%s, read_only=%s)", key, self.durability, self.read_only)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        config: dict[str, Any] = {}
        if self.threads is not None:
            config["threads"] = self.threads
        if self.memory_limit is not None:
            config["memory_limit"] = self.memory_limit
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StorageError(
                f"store file {self.path} does not exist, so it cannot be opened read_only",
                hint="open it once without read_only to create it, or fix store.path",
                file=str(self.path),
            )
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only, config=config)
        except duckdb.Error as exc:
            text = str(exc)
            if "lock" in text.lower() and ("could not set lock" in text.lower() or "conflicting lock" in text.lower()):
                pid = _PID.search(text)
                raise _Locked(f"another process (PID {pid.group(1)})" if pid else "another process") from None
            if "not a valid DuckDB database file" in text or "corrupt" in text.lower():
                raise StoreCorruptError(
                    f"store file {self.path} is not a valid DuckDB database: {text}",
                    hint="move the file aside (asm will create a new one) or restore it from a backup",
                    file=str(self.path),
                ) from None
            if "different configuration" in text:
                raise _Locked("another DuckDB connection in this process") from None
            raise StorageError(
                f"cannot open store file {self.path}: {text}",
                hint="check the file, its permissions and the duckdb version",
                file=str(self.path),
            ) from None

    def _init_schema(self, conn: duckdb.DuckDBPyConnection) -> None:
        where = str(self.path)
        try:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                    "AND schema_name = 'main'"
                ).fetchall()
            }
            if not tables:
                if self.read_only:
                    raise StorageError(
                        f"store file {where} is an empty DuckDB database, not an asm store",
                        hint="open it once without read_only to create the tables",
                        file=where,
                    )
                conn.execute("BEGIN")
                for ddl in _SCHEMA:
                    conn.execute(ddl)
                conn.execute(
                    "INSERT INTO asm_meta VALUES ('application', 'asm'), ('schema_version', ?), ('created_at', ?)",
                    [str(SCHEMA_VERSION), datetime.now(UTC).isoformat()],
                )
                conn.execute("COMMIT")
                return
            if "asm_meta" not in tables:
                shown = ", ".join(sorted(tables)[:5])
                raise StoreCorruptError(
                    f"{where} is a DuckDB database but not an asm store (it has tables {shown} and no asm_meta)",
                    hint="point store.path at a new file",
                    file=where,
                )
            meta = dict(conn.execute("SELECT key, value FROM asm_meta").fetchall())
        except duckdb.Error as exc:
            raise StoreCorruptError(f"cannot read the asm tables of {where}: {exc}", file=where) from None
        if meta.get("application") != "asm":
            raise StoreCorruptError(f"{where} is not an asm store (asm_meta has no application = 'asm')", file=where)
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise StoreCorruptError(
                f"{where} has an unreadable schema_version {meta.get('schema_version')!r}", file=where
            ) from None
        if version > SCHEMA_VERSION:
            raise StoreCorruptError(
                f"{where} has store schema version {version}, newer than this asm-duckdb understands "
                f"({SCHEMA_VERSION})",
                hint="upgrade asm-duckdb (pip install -U asm-duckdb)",
                file=where,
                schema_version=version,
            )
        if version < 1 or not tables >= _TABLES:
            raise StoreCorruptError(
                f"{where} is an incomplete asm store (schema version {version}, tables {sorted(tables)})",
                hint="restore it from a backup",
                file=where,
            )

    async def close(self) -> None:
        """Commit everything acknowledged, stop the writer and release the file."""
        stop = self._begin_close()
        if stop is None:
            return
        try:
            await asyncio.wrap_future(stop)
        finally:
            self._finish_close()

    def _begin_close(self) -> cf.Future[None] | None:
        with self._submit_lock:
            if self._state != "open":
                return self._stop_fut if self._state == "closing" else None
            self._state = "closing"
            self._stop_fut = cf.Future()
            self._queue.put(_Req("stop", self._stop_fut))
        return self._stop_fut

    def _finish_close(self) -> None:
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        with self._submit_lock:
            if self._state == "closing":
                self._state = "closed"
        with _OPEN_FILES_LOCK:
            _OPEN_FILES.discard(str(self.path))
        _LIVE.discard(self)

    def _close_sync(self, timeout: float) -> None:
        stop = self._begin_close()
        if stop is not None:
            stop.result(timeout)
            self._finish_close()

    def _check_open(self) -> None:
        if self._state != "open":
            state = "not open" if self._state == "new" else "closed"
            raise StoreClosedError(
                f"the duckdb store {self.path} is {state}", hint="open it first (or use a new kernel)"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(
                f"the duckdb store {self.path} was opened read_only; it cannot be written",
                hint="set store.read_only = false", file=str(self.path),
            )

    # -- plumbing: the writer queue and the reader pool --------------------------------------

    async def _write(self, req: _Req) -> Any:
        self._check_writable()
        with self._submit_lock:
            self._check_open()
            self._queue.put(req)
        return await asyncio.wrap_future(req.fut)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        readers = self._readers
        if readers is None:
            raise StoreClosedError(f"the duckdb store {self.path} is not open")
        try:
            fut = readers.submit(self._with_cursor, fn, *args)
        except RuntimeError:  # executor shut down by close()
            raise StoreClosedError(f"the duckdb store {self.path} is closed") from None
        return await asyncio.wrap_future(fut)

    def _with_cursor(self, fn: Callable[..., T], *args: Any) -> T:
        cur = self._cursors.get()
        try:
            return fn(cur, *args)
        except duckdb.Error as exc:
            raise StorageError(f"reading {self.path} failed: {exc}", file=str(self.path)) from exc
        finally:
            self._cursors.put(cur)

    async def _flush_if_behind(self, session_id: str) -> None:
        """Commit write-behind events of this session so a read sees every acknowledged append."""
        if session_id in self._behind_sessions:
            with self._submit_lock:
                self._check_open()
                req = _Req("flush", cf.Future())
                self._queue.put(req)
            await asyncio.wrap_future(req.fut)

    async def flush(self) -> None:
        """Commit every acknowledged write-behind event now."""
        if self.read_only:
            return
        await self._write(_Req("flush", cf.Future()))

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(self, session: Session) -> Session:
        self._check_open()
        params = _session_params(session)
        return await self._write(_Req("create_session", cf.Future(), session.id, obj=session, params=params))

    async def get_session(self, session_id: str) -> Session:
        row = await self._read(_fetchone, f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", [session_id])
        if row is None:
            raise SessionNotFoundError(f"no session {session_id!r}", hint="`asm sessions list` shows the ids")
        return _session(row)

    async def update_session(self, session: Session) -> Session:
        self._check_open()
        params = _session_params(session)
        return await self._write(_Req("update_session", cf.Future(), session.id, obj=session, params=params))

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
        sql = f"SELECT {_SESSION_COLS} FROM sessions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        rows = await self._read(_fetchall, sql, [*params, limit, offset])
        return [_session(r) for r in rows]

    # -- runs ---------------------------------------------------------------------------------

    async def create_run(self, run: Run) -> Run:
        self._check_open()
        params = _run_params(run)
        return await self._write(_Req("create_run", cf.Future(), run.session_id, obj=run, params=params))

    async def get_run(self, run_id: str) -> Run:
        row = await self._read(_fetchone, f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return _run(row)

    async def update_run(self, run: Run) -> Run:
        self._check_open()
        params = _run_params(run)
        return await self._write(_Req("update_run", cf.Future(), run.session_id, obj=run, params=params))

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
        where, params = [], []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if status is not None:
            where.append("status = ?")
            params.append(RunStatus(status).value)
        sql = f"SELECT {_RUN_COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id LIMIT ? OFFSET ?"
        rows = await self._read(_fetchall, sql, [*params, limit, offset])
        return [_run(r) for r in rows]

    async def find_run_by_idempotency_key(self, session_id: str, key: str) -> Run | None:
        row = await self._read(
            _fetchone,
            f"SELECT {_RUN_COLS} FROM runs WHERE session_id = ? AND idempotency_key = ? "
            "ORDER BY created_at, id LIMIT 1",
            [session_id, key],
        )
        return None if row is None else _run(row)

    # -- events -------------------------------------------------------------------------------

    async def append(
        self, session_id: str, events: Sequence[Event], *, expected_seq: int | None = None
    ) -> list[Event]:
        self._check_open()
        payloads = check_batch(session_id, events, expected_seq)
        behind = self._fast and bool(events) and all(e.type in STREAM_TYPES for e in events)
        req = _Req("append", cf.Future(), session_id, events, payloads, expected_seq, behind=behind)
        return list(await self._write(req))

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
        await self._flush_if_behind(session_id)
        sql = f"SELECT {_EVENT_COLS} FROM events WHERE session_id = ? AND seq > ?"
        params: list[Any] = [session_id, after]
        if before is not None:
            sql += " AND seq < ?"
            params.append(before)
        if types:
            wanted = list(dict.fromkeys(types))
            sql += f" AND type IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._read(_fetchall_or_check, sql, params, session_id)
        return [_event(r) for r in rows]

    async def last(self, session_id: str, n: int) -> list[Event]:
        self._check_open()
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValidationError(f"n must be an integer >= 0, got {n!r}", path="n")
        await self._flush_if_behind(session_id)
        # Seqs are gapless, so the last n are a seq range on the primary key: much cheaper in
        # DuckDB than ORDER BY seq DESC LIMIT n. Later appends may add rows; keep the last n.
        known = self._acked.get(session_id)
        if known is not None:
            sql = f"SELECT {_EVENT_COLS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq"
            params: list[Any] = [session_id, known - n]
        else:
            sql = (
                f"SELECT {_EVENT_COLS} FROM events WHERE session_id = $1 AND seq > "
                "(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $1) - $2 ORDER BY seq"
            )
            params = [session_id, n]
        rows = await self._read(_fetchall_or_check, sql, params, session_id)
        return [_event(r) for r in rows[-n:]] if n else []

    async def last_seq(self, session_id: str) -> int:
        self._check_open()
        known = self._acked.get(session_id)
        if known is not None:
            return known
        row = await self._read(
            _fetchone,
            "SELECT (SELECT count(*) FROM sessions WHERE id = $1), "
            "(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $1)",
            [session_id],
        )
        if not row or not row[0]:
            raise SessionNotFoundError(f"no session {session_id!r}")
        return max(int(row[1]), self._acked.get(session_id, 0))

    async def wait(self, session_id: str, *, after: int, timeout: float) -> list[Event]:
        return await wait_for_events(
            self._notifier, session_id, after, timeout, lambda: self.read(session_id, after=after)
        )

    # -- the writer thread --------------------------------------------------------------------

    def _writer_main(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while True:
                timeout: float | None = None
                if self._behind_rows:
                    timeout = max(0.0, self._behind_deadline - time.monotonic())
                group = self._drain(timeout)
                if self._process(group):
                    break
        except BaseException:  # pragma: no cover - a bug; keep the file consistent and report
            log.exception("the duckdb writer thread of %s failed", self.path)
        finally:
            self._shutdown_writer()

    def _drain(self, timeout: float | None) -> list[_Req]:
        try:
            first = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return []
        group = [first]
        size = len(first.events)
        while size < MAX_GROUP_EVENTS and first.kind != "stop":
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(req)
            size += len(req.events)
            if req.kind == "stop":
                break
        return group

    def _shutdown_writer(self) -> None:
        conn = self._conn
        if self._in_txn and conn is not None:
            try:
                self._commit()
            except Exception:
                log.exception("final commit to %s failed", self.path)
        # Nothing may be left waiting forever.
        leftover: list[_Req] = []
        while True:
            try:
                leftover.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for req in leftover:
            if req.kind != "stop" and req.fut.set_running_or_notify_cancel():
                req.fut.set_exception(StoreClosedError(f"the duckdb store {self.path} is closed"))
        if self._readers is not None:
            self._readers.shutdown(wait=True)  # reads in flight finish before their cursors close
        for cur in self._all_cursors:
            try:
                cur.close()
            except duckdb.Error:
                pass
        if conn is not None:
            try:
                conn.close()
            except duckdb.Error:
                log.exception("closing %s failed", self.path)
        self._conn = None
        stop = self._stop_fut
        for req in leftover:
            if req.kind == "stop" and req.fut is not stop and not req.fut.done():
                req.fut.set_result(None)
        if stop is not None and not stop.done():
            stop.set_result(None)

    def _begin(self) -> None:
        if not self._in_txn:
            assert self._conn is not None
            self._conn.execute("BEGIN TRANSACTION")
            self._in_txn = True

    def _commit(self) -> None:
        assert self._conn is not None
        if self._in_txn:
            self._in_txn = False
            self._conn.execute("COMMIT")
            self.stats.commits += 1

    def _rollback(self, *, replay: bool) -> None:
        """Undo the open transaction; re-insert acknowledged write-behind rows if ``replay``."""
        assert self._conn is not None
        if self._in_txn:
            self._in_txn = False
            try:
                self._conn.execute("ROLLBACK")
            except duckdb.Error:
                pass
        for sid in self._dirty:
            if sid in self._committed:
                self._seq[sid] = self._acked[sid] = self._committed[sid]
            else:  # created in the rolled-back transaction
                self._seq.pop(sid, None)
                self._acked.pop(sid, None)
        self._dirty.clear()
        behind = self._behind_rows
        if not behind:
            return
        if replay:
            try:
                self._begin()
                self._insert_events(behind)
            except duckdb.Error as exc:
                log.error(
                    "re-inserting %d acknowledged write-behind events into %s failed: %s", len(behind), self.path, exc
                )
                self._rollback(replay=False)
                return
            for row in behind:
                sid, seq = row[1], row[2]
                self._seq[sid] = self._acked[sid] = max(seq, self._seq.get(sid, 0))
                self._dirty.add(sid)
        else:
            log.error(
                "%d acknowledged write-behind events for %s were lost (durability = 'fast')",
                len(behind), self.path,
            )
            self._behind_rows = []
            self._behind_sessions = set()

    def _process(self, group: list[_Req]) -> bool:
        """Handle one drained group; returns True when the writer must stop."""
        stop = any(r.kind == "stop" for r in group)
        reqs = [r for r in group if r.kind == "stop" or r.fut.set_running_or_notify_cancel()]
        reqs = [r for r in reqs if r.kind != "stop"]
        if not reqs:
            if self._behind_rows or self._in_txn:
                self._commit_group([], set())
            return stop
        self.stats.groups += 1
        self.stats.largest_group = max(self.stats.largest_group, len(reqs))
        try:
            results, new_rows = self._apply(reqs, check_ids=False)
        except duckdb.ConstraintException:
            # A retried event id (or a duplicate in the group): redo with explicit lookups.
            self.stats.retries += 1
            self._rollback(replay=True)
            try:
                results, new_rows = self._apply(reqs, check_ids=True)
            except Exception as exc:
                self._rollback(replay=True)
                self._fail(reqs, exc)
                return stop
        except Exception as exc:
            self._rollback(replay=True)
            self._fail(reqs, exc)
            return stop

        pending: list[tuple[_Req, Any]] = []
        touched = {row[1] for row in new_rows}
        for req in reqs:
            result = results[req]
            if isinstance(result, BaseException):
                req.fut.set_exception(result)  # it stored nothing
            elif req.behind and req.kind == "append":
                # Write-behind: acknowledged now, committed soon.
                if not self._behind_rows:
                    self._behind_deadline = time.monotonic() + BEHIND_MAX_DELAY
                self._behind_rows.extend(req.rows or ())
                self._behind_sessions.add(req.session_id)
                if result:
                    self._acked[req.session_id] = max(self._acked.get(req.session_id, 0), max(e.seq for e in result))
                self.stats.behind_acks += 1
                req.fut.set_result(result)
            else:
                pending.append((req, result))
        force = any(r.kind in ("flush", "stop") for r in reqs) or stop
        if (
            pending
            or force
            or len(self._behind_rows) >= BEHIND_MAX_ROWS
            or (self._behind_rows and time.monotonic() >= self._behind_deadline)
            or (self._in_txn and not self._behind_rows and not touched)
        ):
            self._commit_group(pending, touched)
        return stop

    def _commit_group(self, pending: list[tuple[_Req, Any]], touched: set[str]) -> None:
        notify = touched | self._behind_sessions
        try:
            self._commit()
        except Exception as exc:
            self.stats.failed_commits += 1
            err = exc if isinstance(exc, AsmError) else StorageError(
                f"commit to {self.path} failed: {type(exc).__name__}: {exc}", file=str(self.path),
                retryable=True,
            )
            log.error("commit to %s failed: %s", self.path, exc)
            self._rollback(replay=False)
            for req, _ in pending:
                req.fut.set_exception(err)
            return
        for sid in self._dirty:
            if sid in self._seq:
                self._committed[sid] = self._seq[sid]
                self._acked[sid] = self._seq[sid]
        self._dirty.clear()
        self._behind_rows = []
        self._behind_sessions = set()
        for req, result in pending:
            req.fut.set_result(result)
        for sid in notify:
            self._notifier.notify(sid)

    def _fail(self, reqs: list[_Req], exc: BaseException) -> None:
        err = exc if isinstance(exc, AsmError) else StorageError(
            f"writing to {self.path} failed: {type(exc).__name__}: {exc}", file=str(self.path)
        )
        log.error("a group of %d writes to %s failed: %s", len(reqs), self.path, exc)
        for req in reqs:
            if not req.fut.done():
                req.fut.set_exception(err)

    def _apply(self, reqs: list[_Req], *, check_ids: bool) -> tuple[dict[_Req, Any], list[tuple[Any, ...]]]:
        """Check and run every request inside the open transaction; event rows go in last."""
        results: dict[_Req, Any] = {}
        planned: dict[str, Event] = {}
        new_rows: list[tuple[Any, ...]] = []
        for req in reqs:
            try:
                if req.kind == "append":
                    results[req] = self._plan_append(req, check_ids, planned, new_rows)
                elif req.kind == "create_session":
                    results[req] = self._create_session(req)
                elif req.kind == "update_session":
                    results[req] = self._update_session(req)
                elif req.kind == "create_run":
                    results[req] = self._create_run(req)
                elif req.kind == "update_run":
                    results[req] = self._update_run(req)
                else:  # flush
                    results[req] = None
            except AsmError as exc:
                results[req] = exc
        if new_rows:
            self._begin()
            self._insert_events(new_rows)
            self.stats.events += len(new_rows)
        return results, new_rows

    def _session_seq(self, session_id: str) -> int | None:
        """Last seq of the session (loaded on first use), or None when it does not exist."""
        seq = self._seq.get(session_id)
        if seq is not None:
            return seq
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT (SELECT count(*) FROM sessions WHERE id = $1), "
            "(SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $1)",
            [session_id],
        ).fetchone()
        if not row or not row[0]:
            return None
        seq = int(row[1])
        self._seq[session_id] = self._committed[session_id] = seq
        self._acked[session_id] = max(seq, self._acked.get(session_id, 0))
        return seq

    def _lookup(self, ids: list[str], planned: dict[str, Event]) -> list[Event | None]:
        missing = [i for i in ids if i not in planned]
        found: dict[str, Event] = {}
        if missing:
            assert self._conn is not None
            if len(missing) <= 32:
                sql = f"SELECT {_EVENT_COLS} FROM events WHERE id IN ({', '.join('?' * len(missing))})"
                params: list[Any] = missing
            else:
                sql = f"SELECT {_EVENT_COLS} FROM events WHERE id IN (SELECT unnest(?::VARCHAR[]))"
                params = [missing]
            for row in self._conn.execute(sql, params).fetchall():
                found[row[0]] = _event(row)
        return [planned.get(i) or found.get(i) for i in ids]

    def _plan_append(
        self, req: _Req, check_ids: bool, planned: dict[str, Event], new_rows: list[tuple[Any, ...]]
    ) -> list[Event]:
        sid = req.session_id
        last = self._session_seq(sid)
        if last is None:
            raise SessionNotFoundError(
                f"cannot append to session {sid!r}: it does not exist", hint="create the session first"
            )
        events = req.events
        conflict = req.expected_seq is not None and req.expected_seq != last
        stored: list[Event | None] = [None] * len(events)
        if check_ids or conflict or any(e.id in planned for e in events):
            stored = self._lookup([e.id for e in events], planned)
            if events and all(s is not None for s in stored):
                return [s for s in stored if s is not None]
        if conflict:
            raise SeqConflictError(
                f"session {sid!r} is at seq {last}, not the expected {req.expected_seq}",
                hint="re-read the log and retry",
                expected=req.expected_seq,
                actual=last,
            )
        out: list[Event] = []
        req.rows = []
        for event, existing, payload in zip(events, stored, req.payloads, strict=True):
            if existing is not None:
                out.append(existing)
                continue
            last += 1
            event = evolve(event, seq=last)
            row = list(event_row(event, payload, last))
            row[6] = _utc(event.timestamp)
            new_rows.append(tuple(row))
            req.rows.append(tuple(row))
            planned[event.id] = event
            out.append(event)
        if len(out) != sum(1 for s in stored if s is not None):
            self.stats.appends += 1
        self._seq[sid] = last
        self._dirty.add(sid)
        return out

    def _insert_events(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        if len(rows) <= 8:
            sql = "INSERT INTO events VALUES " + ", ".join([_EVENT_VALUES] * len(rows))
            self._conn.execute(sql, [v for row in rows for v in row])
        else:
            self._conn.execute(_INSERT_EVENTS_UNNEST, [list(col) for col in zip(*rows, strict=True)])

    def _exists(self, table: str, ident: str) -> bool:
        assert self._conn is not None
        return self._conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", [ident]).fetchone() is not None

    def _create_session(self, req: _Req) -> Session:
        session: Session = req.obj
        if session.id in self._seq or self._exists("sessions", session.id):
            raise AlreadyExistsError(f"session {session.id!r} already exists")
        assert self._conn is not None
        self._begin()
        self._conn.execute(_INSERT_SESSION, req.params)
        self._seq[session.id] = 0
        self._dirty.add(session.id)
        return session

    def _update_session(self, req: _Req) -> Session:
        session: Session = req.obj
        assert self._conn is not None and req.params is not None
        p = req.params
        self._begin()
        if not self._conn.execute(_UPDATE_SESSION, [*p[1:], p[0]]).fetchall():
            raise SessionNotFoundError(f"no session {session.id!r}")
        return session

    def _create_run(self, req: _Req) -> Run:
        run: Run = req.obj
        if self._session_seq(run.session_id) is None:
            raise SessionNotFoundError(f"no session {run.session_id!r} for run {run.id!r}")
        if self._exists("runs", run.id):
            raise AlreadyExistsError(f"run {run.id!r} already exists")
        assert self._conn is not None
        self._begin()
        self._conn.execute(_INSERT_RUN, req.params)
        return run

    def _update_run(self, req: _Req) -> Run:
        run: Run = req.obj
        assert self._conn is not None and req.params is not None
        p = req.params
        self._begin()
        if not self._conn.execute(_UPDATE_RUN, [*p[1:], p[0]]).fetchall():
            raise RunNotFoundError(f"no run {run.id!r}")
        return run


class _Locked(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


# -- reader-side helpers (run on a reader thread with its own cursor) ---------------------------


def _fetchone(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> Any:
    return cur.execute(sql, params).fetchone()


def _fetchall(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[Any]:
    return cur.execute(sql, params).fetchall()


def _fetchall_or_check(cur: duckdb.DuckDBPyConnection, sql: str, params: list[Any], session_id: str) -> list[Any]:
    """Rows of an event query; an empty answer checks that the session exists."""
    rows = cur.execute(sql, params).fetchall()
    if not rows and cur.execute("SELECT 1 FROM sessions WHERE id = ?", [session_id]).fetchone() is None:
        raise SessionNotFoundError(f"no session {session_id!r}")
    return rows
