"""What the store keeps in memory, each part bounded in bytes.

The store is the file's only writer (DuckDB lets one process hold it, and one store per file
is allowed in that process), so whatever it wrote is the truth and can be kept:

* :class:`Records` — a write-through cache of session states (the record, its last seqs, an
  index of its runs) and run records, least recently used dropped first. A session whose
  acknowledged events are not all committed yet is never dropped: its seqs exist nowhere else.
* :class:`Tail` — the newest acknowledged event rows of recently used sessions, so reading a
  session's log (how the kernel rebuilds a transcript) needs no query, plus an index of their
  ids so a retried unit is recognised without one.

Sizes are estimates of the Python objects (text lengths plus a fixed overhead per entry), good
to a factor well under two; the point is that memory follows the budget, not the session count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from asm_kernel.model import Run, RunStatus, Session

from .codec import OVERHEAD, Row, row_size

__all__ = ["SessionState", "Records", "Tail", "run_size", "session_size"]


def session_size(session: Session) -> int:
    return OVERHEAD * 2 + len(str(session.metadata)) + sum(len(t) for t in session.tags)


def run_size(run: Run) -> int:
    # input/output dominate; their text lengths are a fair proxy for the objects.
    text = 0
    for message in (run.input, run.output):
        if message is not None:
            text += sum(len(str(b)) for b in message.content)
    return OVERHEAD * 3 + text + len(str(run.metadata)) + (len(str(run.error)) if run.error else 0)


@dataclass(eq=False, slots=True)
class SessionState:
    """A session as the writer knows it.

    ``seq`` is the last seq assigned (a unit being written may hold seqs beyond ``acked``),
    ``acked`` the last acknowledged to a caller, ``committed`` the last committed to the file.
    ``runs`` indexes the session's runs (status and idempotency key), loaded when a unit first
    needs it (``no_live_runs``, a new run with a key).
    """

    session: Session
    seq: int
    acked: int
    committed: int
    runs: dict[str, tuple[RunStatus, str | None]] | None = None
    size: int = field(default=0)

    def resize(self) -> None:
        self.size = session_size(self.session) + (len(self.runs) * 120 if self.runs else 0)


class Records:
    """Session states and run records, bounded by ``max_bytes`` (callers hold the store lock)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.runs: OrderedDict[str, tuple[Run, int]] = OrderedDict()
        self.bytes = 0

    def session(self, session_id: str) -> SessionState | None:
        state = self.sessions.get(session_id)
        if state is not None:
            self.sessions.move_to_end(session_id)
        return state

    def put_session(self, state: SessionState) -> None:
        old = self.sessions.get(state.session.id)
        if old is not None:
            self.bytes -= old.size
        state.resize()
        self.sessions[state.session.id] = state
        self.sessions.move_to_end(state.session.id)
        self.bytes += state.size
        self._shrink()

    def resized(self, state: SessionState) -> None:
        before = state.size
        state.resize()
        if self.sessions.get(state.session.id) is state:
            self.bytes += state.size - before

    def run(self, run_id: str) -> Run | None:
        entry = self.runs.get(run_id)
        if entry is None:
            return None
        self.runs.move_to_end(run_id)
        return entry[0]

    def put_run(self, run: Run) -> None:
        old = self.runs.pop(run.id, None)
        if old is not None:
            self.bytes -= old[1]
        size = run_size(run)
        self.runs[run.id] = (run, size)
        self.bytes += size
        self._shrink()

    def _shrink(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        # Runs first (they are re-read with one point query), then sessions without
        # uncommitted events.
        while self.bytes > self.max_bytes and self.runs:
            _, (_, size) = self.runs.popitem(last=False)
            self.bytes -= size
        if self.bytes <= self.max_bytes:
            return
        for sid in list(self.sessions):
            state = self.sessions[sid]
            if state.seq == state.committed:
                del self.sessions[sid]
                self.bytes -= state.size
                if self.bytes <= self.max_bytes:
                    return

    def clear(self) -> None:
        self.sessions.clear()
        self.runs.clear()
        self.bytes = 0


class _Entry:
    __slots__ = ("lo", "rows", "size")

    def __init__(self, lo: int) -> None:
        self.lo = lo  # rows hold seqs lo + 1 .. lo + len(rows), gapless
        self.rows: list[Row] = []
        self.size = 0


class Tail:
    """The newest acknowledged event rows of recently used sessions (thread-safe).

    A session's entry always ends at its last acknowledged seq (every acknowledged row is fed,
    in seq order), so a read whose range starts inside the entry is answered from it. Least
    recently used sessions are dropped first; one session keeps at most an eighth of the budget.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Entry] = OrderedDict()
        self._ids: dict[str, Row] = {}
        self.bytes = 0

    @property
    def per_session(self) -> int:
        return max(self.max_bytes // 8, 1)

    def feed(self, rows: list[Row]) -> None:
        """Add acknowledged rows (each session's in ascending seq order)."""
        if not rows or self.max_bytes <= 0:
            return
        with self._lock:
            for row in rows:
                sid, seq = row[1], row[2]
                entry = self._sessions.get(sid)
                if entry is None or seq != entry.lo + len(entry.rows) + 1:
                    if entry is not None:
                        self._drop(sid, entry)
                    entry = self._sessions[sid] = _Entry(seq - 1)
                self._push(entry, row)
                self._sessions.move_to_end(sid)
                if entry.size > self.per_session:
                    self._trim(entry)
            self._shrink()

    def fill(self, session_id: str, rows: list[Row], acked: int | None) -> None:
        """Keep rows read from the file (seqs ``after + 1 ..``), if they join the entry.

        Called after a read from DuckDB: the rows are prepended to the session's entry when they
        end where it starts, or start a new entry when they end at the session's last
        acknowledged seq (``acked``). Anything else is dropped: the tail must stay gapless.
        """
        if not rows or self.max_bytes <= 0:
            return
        size = sum(row_size(r) for r in rows)
        if size > self.per_session:
            return
        with self._lock:
            entry = self._sessions.get(session_id)
            last = rows[-1][2]
            if entry is None:
                if acked is None or last != acked:
                    return
                entry = self._sessions[session_id] = _Entry(last)
            if last != entry.lo or entry.size + size > self.per_session:
                return
            entry.rows[:0] = rows
            entry.lo = rows[0][2] - 1
            entry.size += size
            self.bytes += size
            for row in rows:
                self._ids[row[0]] = row
            self._sessions.move_to_end(session_id)
            self._shrink()

    def _push(self, entry: _Entry, row: Row) -> None:
        size = row_size(row)
        entry.rows.append(row)
        entry.size += size
        self.bytes += size
        self._ids[row[0]] = row

    def _trim(self, entry: _Entry) -> None:
        keep = self.per_session // 2
        drop = 0
        freed = 0
        while drop < len(entry.rows) and entry.size - freed > keep:
            freed += row_size(entry.rows[drop])
            self._ids.pop(entry.rows[drop][0], None)
            drop += 1
        del entry.rows[:drop]
        entry.lo += drop
        entry.size -= freed
        self.bytes -= freed

    def _drop(self, session_id: str, entry: _Entry) -> None:
        del self._sessions[session_id]
        self.bytes -= entry.size
        for row in entry.rows:
            self._ids.pop(row[0], None)

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes and self._sessions:
            sid = next(iter(self._sessions))
            self._drop(sid, self._sessions[sid])

    def after(self, session_id: str, after: int, acked: int | None) -> list[Row] | None:
        """Rows with seq > ``after`` up to ``acked``, or None when the tail cannot tell."""
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or acked is None or after < entry.lo or entry.lo + len(entry.rows) < acked:
                return None
            self._sessions.move_to_end(session_id)
            return entry.rows[after - entry.lo : acked - entry.lo]

    def last(self, session_id: str, n: int, acked: int | None) -> list[Row] | None:
        with self._lock:
            entry = self._sessions.get(session_id)
            if entry is None or acked is None or entry.lo + len(entry.rows) < acked:
                return None
            have = acked - entry.lo
            if n > have and entry.lo > 0:
                return None
            self._sessions.move_to_end(session_id)
            return entry.rows[max(0, have - n) : have] if n else []

    def stored(self, event_id: str) -> Row | None:
        """The acknowledged row with this event id, if the tail holds it."""
        with self._lock:
            return self._ids.get(event_id)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._ids.clear()
            self.bytes = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"sessions": len(self._sessions), "bytes": self.bytes, "events": len(self._ids)}
