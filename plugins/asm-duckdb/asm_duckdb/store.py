"""``use = "duckdb"``: sessions, runs and the event log in one DuckDB file.

How it is fast and safe:

* **One writer thread** owns the DuckDB connection used for writes. Every write (append,
  session and run changes) is a request put on a queue; the writer drains *all* pending
  requests - from any session, thread or event loop - into **one transaction** (group commit),
  checks each request in memory, writes, commits once, then answers every caller (one
  wake-up per event loop per group). A bad request (unknown session, seq conflict, duplicate
  id) fails alone; a failed commit fails the whole group and rolls the in-memory seq cache back.
* **A few statements per group**: the event rows are one insert; session and run writes are
  coalesced by id (:class:`_Plan`, the last write of a record wins) and go in as one insert
  and one ``UPDATE ... FROM unnest(...)`` per table; the ``RETURNING`` ids tell which updates
  found their record, so an update of an unknown id still fails alone.
* **Seqs** come from an in-memory per-session cache loaded from ``MAX(seq)`` on first use.
  Event-id idempotency is checked optimistically: rows are inserted without a lookup and the
  unique index on ``events.id`` catches a retried id, in which case the group is rolled back
  and redone with explicit lookups (a retry then returns the stored events and their seqs).
* **Write-behind** (``durability = "fast"``): an append made only of stream deltas
  (:data:`asm_kernel.events.STREAM_TYPES`) is acknowledged as soon as its rows are in the open
  transaction; the writer commits them within :data:`BEHIND_MAX_DELAY` seconds, at the next
  awaited append, before any read of that session, and on ``close()``. A crash can lose those
  (and only those) acknowledged deltas.
* **Reads** see every acknowledged append (a read of a session with write-behind rows pending
  first asks for a commit). Reads of a session's newest events are answered from an in-memory
  tail of committed rows (:class:`_Tail`); the others run on a small thread pool, each on its
  own cursor.
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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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

__all__ = ["DuckDBStore", "DuckDBStats", "SCHEMA_VERSION", "BEHIND_MAX_DELAY", "BEHIND_MAX_ROWS", "TAIL_BYTES"]

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
#: Longest the writer waits, while requests keep arriving, for the callers of the last group
#: to queue their next writes into the next one (polling every GATHER_POLL seconds).
GATHER_MAX_DELAY = 0.002
GATHER_POLL = 0.0002
#: Reader threads (each with its own cursor).
READERS = 3
#: Memory kept for the recently committed events of recently written sessions (payload bytes,
#: roughly), so reading a session's newest events - how the kernel catches a transcript up
#: before each run - needs no DuckDB query. 0 turns it off.
TAIL_BYTES = 16 * 2**20
#: Most events kept per session in that tail.
TAIL_EVENTS = 1000

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


#: Up to this many new rows per table go in as one plain ``VALUES`` insert (unnest costs more
#: to set up, less per row).
_FEW_INSERTS = 4
#: Up to this many changed rows per table are one ``UPDATE ... WHERE id = ?`` each.
_FEW_UPDATES = 2


class _Table:
    """Batched writes of whole records to a table keyed by ``id`` (its first column).

    A few rows are plain ``VALUES`` / one ``UPDATE ... WHERE id = ?`` each; more are one
    statement over typed ``unnest`` lists, whose cost barely grows with the number of rows.
    """

    def __init__(self, name: str, spec: str) -> None:
        self.name = name
        columns = [c.split() for c in spec.split(", ")]
        self._values = "(" + ", ".join(f"?::{t}" for _, t in columns) + ")"
        unnest = ", ".join(f"unnest(${i}::{t}[]) AS {c}" for i, (c, t) in enumerate(columns, 1))
        self._insert_unnest = f"INSERT INTO {name} SELECT {unnest}"
        rest = columns[1:]
        sets = ", ".join(f"{c} = ?::{t}" for c, t in rest)
        self._update_one = f"UPDATE {name} SET {sets} WHERE id = ? RETURNING id"
        sets = ", ".join(f"{c} = u.{c}" for c, _ in rest)
        self._update_unnest = (
            f"UPDATE {name} SET {sets} FROM (SELECT {unnest}) AS u WHERE {name}.id = u.id RETURNING {name}.id"
        )

    def insert(self, conn: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> None:
        if len(rows) <= _FEW_INSERTS:
            sql = f"INSERT INTO {self.name} VALUES " + ", ".join([self._values] * len(rows))
            conn.execute(sql, [v for row in rows for v in row])
        else:
            conn.execute(self._insert_unnest, [list(col) for col in zip(*rows, strict=True)])

    def update(self, conn: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> set[str]:
        """Replace the stored rows with these; returns the ids found (the others changed nothing)."""
        if len(rows) <= _FEW_UPDATES:
            return {row[0] for row in rows if conn.execute(self._update_one, [*row[1:], row[0]]).fetchall()}
        got = conn.execute(self._update_unnest, [list(col) for col in zip(*rows, strict=True)]).fetchall()
        return {r[0] for r in got}


_SESSIONS = _Table(
    "sessions",
    "id VARCHAR, agent_id VARCHAR, status VARCHAR, metadata VARCHAR, tags VARCHAR[], created_at TIMESTAMPTZ, "
    "updated_at TIMESTAMPTZ",
)
_RUNS = _Table(
    "runs",
    "id VARCHAR, session_id VARCHAR, status VARCHAR, input VARCHAR, output VARCHAR, usage VARCHAR, cost DOUBLE, "
    "provider VARCHAR, model VARCHAR, stop_reason VARCHAR, error VARCHAR, idempotency_key VARCHAR, "
    "metadata VARCHAR, created_at TIMESTAMPTZ, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ",
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
    fut: asyncio.Future[Any] | cf.Future[Any]  # the caller's loop future (a thread future for stop)
    session_id: str = ""
    events: Sequence[Event] = ()
    payloads: Sequence[str] = ()
    expected_seq: int | None = None
    obj: Any = None
    params: list[Any] | None = None
    behind: bool = False
    rows: list[tuple[Any, ...]] | None = None  # event rows this append inserted


@dataclass
class _Plan:
    """The session and run writes of one group, coalesced by id (the last write of a record wins).

    ``new_*`` are rows to insert (a create, plus any later updates of it in the group); ``upd_*``
    are rows to update, with the requests that asked for them: if the id turns out not to
    exist, each of those requests fails alone. Updates run before inserts, so an update queued
    before the create of the same id still finds nothing, as it would have on its own.
    """

    new_sessions: dict[str, list[Any]] = field(default_factory=dict)
    upd_sessions: dict[str, tuple[list[Any], list[_Req]]] = field(default_factory=dict)
    new_runs: dict[str, list[Any]] = field(default_factory=dict)
    upd_runs: dict[str, tuple[list[Any], list[_Req]]] = field(default_factory=dict)
    #: Ids known to be stored already (looked up only when redoing a group with check_ids).
    stored_sessions: set[str] = field(default_factory=set)
    stored_runs: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.new_sessions or self.upd_sessions or self.new_runs or self.upd_runs)


class _SessionTail:
    __slots__ = ("lo", "rows", "size")

    def __init__(self, lo: int) -> None:
        self.lo = lo  # rows hold seqs lo + 1 .. lo + len(rows), gapless
        self.rows: list[tuple[Any, ...]] = []
        self.size = 0


class _Tail:
    """The newest committed event rows of recently written sessions, in memory.

    The store is the file's only writer, so what it committed is the truth: a read whose range
    lies inside a session's tail, and which the tail has caught up on, is answered from here on
    the caller's thread. Fed by the writer thread after each commit; least recently written
    sessions are dropped first.
    """

    def __init__(self, max_bytes: int, max_rows: int) -> None:
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _SessionTail] = OrderedDict()
        self._bytes = 0

    def feed(self, rows: list[tuple[Any, ...]]) -> None:
        """Add committed rows (in commit order, so each session's seqs ascend)."""
        if not rows or self.max_bytes <= 0:
            return
        with self._lock:
            sessions = self._sessions
            for row in rows:
                sid, seq = row[1], row[2]
                entry = sessions.get(sid)
                if entry is None or seq != entry.lo + len(entry.rows) + 1:
                    if entry is not None:
                        self._bytes -= entry.size
                    entry = sessions[sid] = _SessionTail(seq - 1)
                size = 256 + len(row[5])
                entry.rows.append(row)
                entry.size += size
                self._bytes += size
                if len(entry.rows) > self.max_rows + self.max_rows // 4:
                    drop = len(entry.rows) - self.max_rows
                    freed = sum(256 + len(r[5]) for r in entry.rows[:drop])
                    del entry.rows[:drop]
                    entry.lo += drop
                    entry.size -= freed
                    self._bytes -= freed
                sessions.move_to_end(sid)
            while self._bytes > self.max_bytes and sessions:
                _, old = sessions.popitem(last=False)
                self._bytes -= old.size

    def after(self, session_id: str, after: int, known: int | None) -> list[tuple[Any, ...]] | None:
        """Rows with seq > ``after``, or None when the tail cannot tell (ask DuckDB).

        ``known`` is the last seq acknowledged when the read began; the tail must reach it.
        """
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or known is None or after < entry.lo or entry.lo + len(entry.rows) < known:
                return None
            return entry.rows[after - entry.lo :]

    def last(self, session_id: str, n: int, known: int | None) -> list[tuple[Any, ...]] | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or known is None or entry.lo + len(entry.rows) < known:
                return None
            if n > len(entry.rows) and entry.lo > 0:
                return None
            return entry.rows[-n:] if n else []

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._bytes = 0


def _tail_event(row: tuple[Any, ...]) -> Event:
    return event_from_row(row)  # the row as inserted: its ts is already an aware datetime


def _select(
    rows: list[tuple[Any, ...]], before: int | None, limit: int | None, types: Sequence[str] | None
) -> list[Event]:
    """``read``'s filters applied to tail rows (seq-ordered, all after the wanted seq)."""
    wanted = set(types) if types else None
    out: list[Event] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        if before is not None and row[2] >= before:
            break
        if wanted is None or row[4] in wanted:
            out.append(_tail_event(row))
    return out


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
        self._txn_rows: list[tuple[Any, ...]] = []  # event rows inserted in the open transaction
        self._last_group = 0  # requests in the last group drained
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        self._tail = _Tail(TAIL_BYTES, TAIL_EVENTS)
        self._plan = _Plan()  # session and run writes of the group being applied

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
        return await _awaitable(req)

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
                req = _Req("flush", _future())
                self._queue.put(req)
            await _awaitable(req)

    async def flush(self) -> None:
        """Commit every acknowledged write-behind event now."""
        if self.read_only:
            return
        await self._write(_Req("flush", _future()))

    # -- sessions -----------------------------------------------------------------------------

    async def create_session(self, session: Session) -> Session:
        self._check_open()
        params = _session_params(session)
        return await self._write(_Req("create_session", _future(), session.id, obj=session, params=params))

    async def get_session(self, session_id: str) -> Session:
        row = await self._read(_fetchone, f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", [session_id])
        if row is None:
            raise SessionNotFoundError(f"no session {session_id!r}", hint="`asm sessions list` shows the ids")
        return _session(row)

    async def update_session(self, session: Session) -> Session:
        self._check_open()
        params = _session_params(session)
        return await self._write(_Req("update_session", _future(), session.id, obj=session, params=params))

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
        return await self._write(_Req("create_run", _future(), run.session_id, obj=run, params=params))

    async def get_run(self, run_id: str) -> Run:
        row = await self._read(_fetchone, f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", [run_id])
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return _run(row)

    async def update_run(self, run: Run) -> Run:
        self._check_open()
        params = _run_params(run)
        return await self._write(_Req("update_run", _future(), run.session_id, obj=run, params=params))

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
        req = _Req("append", _future(), session_id, events, payloads, expected_seq, behind=behind)
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
        acked = self._acked.get(session_id)  # what this read must see
        await self._flush_if_behind(session_id)
        tail = self._tail.after(session_id, after, acked)
        if tail is not None:
            return _select(tail, before, limit, types)
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
        acked = self._acked.get(session_id)  # what this read must see
        await self._flush_if_behind(session_id)
        tail = self._tail.last(session_id, n, acked)
        if tail is not None:
            return [_tail_event(row) for row in tail]
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
                try:
                    done = self._process(group)
                finally:
                    self._send()
                if done:
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
        expected = deadline = 0.0
        idle = 0
        while size < MAX_GROUP_EVENTS and group[-1].kind != "stop":
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                # The callers the last group answered usually queue their next writes at once:
                # while they keep arriving, give them a moment (bounded) to join this group
                # rather than start the next one - one commit instead of two.
                now = time.monotonic()
                if not deadline:
                    expected = len(group) + self._last_group
                    deadline = now + GATHER_MAX_DELAY
                if self._last_group < 2 or len(group) >= expected or idle >= 2 or now >= deadline:
                    break
                idle += 1
                time.sleep(GATHER_POLL)
                continue
            idle = 0
            group.append(req)
            size += len(req.events)
        self._last_group = len(group)
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
            if req.kind != "stop" and self._claim(req):
                self._reply(req, exc=StoreClosedError(f"the duckdb store {self.path} is closed"))
        self._send()
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

    @staticmethod
    def _claim(req: _Req) -> bool:
        """False when the caller gave up (cancelled) before the writer got to the request."""
        if isinstance(req.fut, cf.Future):
            return req.fut.set_running_or_notify_cancel()
        return not req.fut.cancelled()

    def _reply(self, req: _Req, result: Any = None, exc: BaseException | None = None) -> None:
        """Queue the answer to a request; :meth:`_send` hands a group's answers over at once."""
        fut = req.fut
        if isinstance(fut, cf.Future):
            if not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)
            return
        self._outbox.setdefault(fut.get_loop(), []).append((fut, result, exc))

    def _send(self) -> None:
        """Wake each waiting event loop once for all its answers (not once per request)."""
        outbox, self._outbox = self._outbox, {}
        for loop, answers in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, answers)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                pass

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
        self._txn_rows = []
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
            self._txn_rows = list(behind)
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
        reqs = [r for r in group if r.kind == "stop" or self._claim(r)]
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
                self._reply(req, exc=result)  # it stored nothing
            elif req.behind and req.kind == "append":
                # Write-behind: acknowledged now, committed soon.
                if not self._behind_rows:
                    self._behind_deadline = time.monotonic() + BEHIND_MAX_DELAY
                self._behind_rows.extend(req.rows or ())
                self._behind_sessions.add(req.session_id)
                if result:
                    self._acked[req.session_id] = max(self._acked.get(req.session_id, 0), max(e.seq for e in result))
                self.stats.behind_acks += 1
                self._reply(req, result)
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
        self._send()  # write-behind acks and failed requests need not wait for the commit
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
                self._reply(req, exc=err)
            return
        # The tail first: a reader that sees the new acknowledged seqs must find their rows there.
        self._tail.feed(self._txn_rows)
        self._txn_rows = []
        for sid in self._dirty:
            if sid in self._seq:
                self._committed[sid] = self._seq[sid]
                self._acked[sid] = self._seq[sid]
        self._dirty.clear()
        self._behind_rows = []
        self._behind_sessions = set()
        for req, result in pending:
            self._reply(req, result)
        for sid in notify:
            self._notifier.notify(sid)

    def _fail(self, reqs: list[_Req], exc: BaseException) -> None:
        err = exc if isinstance(exc, AsmError) else StorageError(
            f"writing to {self.path} failed: {type(exc).__name__}: {exc}", file=str(self.path)
        )
        log.error("a group of %d writes to %s failed: %s", len(reqs), self.path, exc)
        for req in reqs:
            self._reply(req, exc=err)

    def _apply(self, reqs: list[_Req], *, check_ids: bool) -> tuple[dict[_Req, Any], list[tuple[Any, ...]]]:
        """Check and run every request inside the open transaction.

        Requests are checked in order against in-memory state; then the group's session and run
        writes go in as a few batched statements (:class:`_Plan`) and its event rows as one insert.
        """
        results: dict[_Req, Any] = {}
        planned: dict[str, Event] = {}
        new_rows: list[tuple[Any, ...]] = []
        self._plan = plan = _Plan()
        if check_ids:
            plan.stored_sessions = self._lookup_ids(
                "sessions", {r.obj.id for r in reqs if r.kind == "create_session" and r.obj.id not in self._seq}
            )
            plan.stored_runs = self._lookup_ids("runs", {r.obj.id for r in reqs if r.kind == "create_run"})
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
        if plan:
            self._write_plan(plan, results)
        if new_rows:
            self._begin()
            self._insert_events(new_rows)
            self._txn_rows.extend(new_rows)
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
            row[4] = str.__str__(row[4])  # a plain str, as DuckDB gives it back (not an EventType)
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

    def _lookup_ids(self, table: str, ids: set[str]) -> set[str]:
        """The ids among ``ids`` stored in ``table`` (one query)."""
        if not ids:
            return set()
        assert self._conn is not None
        rows = self._conn.execute(f"SELECT id FROM {table} WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)])
        return {r[0] for r in rows.fetchall()}

    def _create_session(self, req: _Req) -> Session:
        session: Session = req.obj
        plan = self._plan
        if session.id in self._seq or session.id in plan.stored_sessions:
            raise AlreadyExistsError(f"session {session.id!r} already exists")
        # Optimistic: a stored session nobody has used yet is caught by the primary key on insert.
        assert req.params is not None
        plan.new_sessions[session.id] = req.params
        self._seq[session.id] = 0
        self._dirty.add(session.id)
        return session

    def _update_session(self, req: _Req) -> Session:
        session: Session = req.obj
        plan = self._plan
        assert req.params is not None
        if session.id in plan.new_sessions:
            plan.new_sessions[session.id] = req.params
        else:
            waiting = plan.upd_sessions[session.id][1] if session.id in plan.upd_sessions else []
            waiting.append(req)
            plan.upd_sessions[session.id] = (req.params, waiting)
        return session

    def _create_run(self, req: _Req) -> Run:
        run: Run = req.obj
        plan = self._plan
        if self._session_seq(run.session_id) is None:
            raise SessionNotFoundError(f"no session {run.session_id!r} for run {run.id!r}")
        if run.id in plan.new_runs or run.id in plan.stored_runs:
            raise AlreadyExistsError(f"run {run.id!r} already exists")
        # Optimistic: a stored run is caught by the primary key on insert (then the group is redone).
        assert req.params is not None
        plan.new_runs[run.id] = req.params
        return run

    def _update_run(self, req: _Req) -> Run:
        run: Run = req.obj
        plan = self._plan
        assert req.params is not None
        if run.id in plan.new_runs:
            plan.new_runs[run.id] = req.params
        else:
            waiting = plan.upd_runs[run.id][1] if run.id in plan.upd_runs else []
            waiting.append(req)
            plan.upd_runs[run.id] = (req.params, waiting)
        return run

    def _write_plan(self, plan: _Plan, results: dict[_Req, Any]) -> None:
        """Run the group's session and run writes: a few statements, whatever the group size."""
        conn = self._conn
        assert conn is not None
        self._begin()
        if plan.upd_sessions:
            found = _SESSIONS.update(conn, [p for p, _ in plan.upd_sessions.values()])
            for sid, (_, waiting) in plan.upd_sessions.items():
                if sid not in found:
                    for req in waiting:
                        results[req] = SessionNotFoundError(f"no session {sid!r}")
        if plan.upd_runs:
            found = _RUNS.update(conn, [p for p, _ in plan.upd_runs.values()])
            for rid, (_, waiting) in plan.upd_runs.items():
                if rid not in found:
                    for req in waiting:
                        results[req] = RunNotFoundError(f"no run {rid!r}")
        if plan.new_sessions:
            _SESSIONS.insert(conn, list(plan.new_sessions.values()))
        if plan.new_runs:
            _RUNS.insert(conn, list(plan.new_runs.values()))


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _awaitable(req: _Req) -> asyncio.Future[Any]:
    assert isinstance(req.fut, asyncio.Future)
    return req.fut


def _deliver(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    """Resolve a group's futures on their own loop (callers that gave up are skipped)."""
    for fut, result, exc in answers:
        if fut.done():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


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
