"""High-water marks: finding committed events a damaged WAL dropped, instead of hiding the loss.

DuckDB commits a transaction by appending it to the ``.wal`` file and syncing it; a checkpoint
later moves it into the database file. If the WAL loses its tail after a crash (a truncated or
damaged ``.wal``, storage that lied about a sync), DuckDB replays what it can and opens the file
without complaint: committed transactions are gone, and the log looks whole.

So the store keeps, **outside DuckDB**, the highest committed seq of every session in a sidecar
file next to the database (``<file>.marks``) - a truncation of the WAL cannot erase it together
with the data. After every commit the writer adds one line per session it touched
(``<session_id> <seq>\\n``; a later line wins), and a clean close adds ``#closed <events>``. At
open, after a clean close, the sum of the marks (seqs are gapless, so a session holds exactly
``mark`` events) and that count are compared with ``count(*)`` of the events table - one cheap
query; otherwise (a crash: the close line is missing) the store compares each session's
``max(seq)`` - equal sums could hide a session holding more than its mark beside one that lost
as many. From then on the marks are each session's top seq exactly (the planner numbers a
session's first write from them):

* a session holding fewer events than its mark lost ``mark - max(seq)`` committed events: the
  store logs a WARNING naming each, sets ``store.lost = {session_id: events lost}``, and keeps a
  record of the loss in ``asm_meta`` (key ``lost_events``, a JSON list; later opens load it into
  ``store.lost_before``);
* a session holding more than its mark is normal after a crash between a commit and its mark
  line (the mark is written after the commit, so it never claims what was not committed).

The marks file is then rewritten compactly from what the file holds, and from then on describes
it. How durable the marks are: each line is written (``write(2)``) by the writer thread after the
commit and before any caller is answered, so it survives ``kill -9`` of the process at once; it
is synced to disk (``fdatasync``) by a background thread, at most every :data:`SYNC_INTERVAL`
(20 ms; one sync per commit competed with DuckDB's own WAL sync and slowed serial commits), so
it costs the write path nothing but a ``write``, and a power loss can only lose the marks of the
last ~20 ms of commits - whose loss would then go unreported. The file is compacted when it
grows past four times its compact size (and at least 4 MiB). It costs about 150 bytes of memory
per session ever written. A missing marks file (a file from an
older asm-duckdb, or one deleted) is rebuilt from the events at open: nothing can be checked
that time.

The marks file names the database it describes: its first line is ``#file <file_id>``, the
random id the database keeps in ``asm_meta`` (key ``file_id``, made with the file and
checkpointed at once, so a lost WAL cannot take it). A marks file naming another database -
left behind when a database was deleted and made again under the same name, or copied from
elsewhere - is stale: it is ignored (an INFO line says so) and rebuilt, instead of reporting
the other database's events as lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .layout import LOG

if TYPE_CHECKING:
    import duckdb

__all__ = ["Marks", "marks_path", "check", "file_id", "COMPACT_MIN"]

log = logging.getLogger("asm.duckdb")

#: The marks file is compacted once it is larger than this and four times its compact size.
COMPACT_MIN = 4 * 2**20
#: The file is grown by this many zero bytes at a time, so that writing a mark overwrites
#: allocated blocks: appending (growing the file) made every DuckDB WAL sync flush the marks
#: file's new blocks too (ext4 ``data=ordered``), which measurably slowed serial commits.
CHUNK = 64 * 2**10
#: The first word of the line a clean close writes last: ``#closed <events in the log>``.
CLOSED = b"#closed"
#: The first word of the marks file's first line: ``#file <the database's file_id>``.
FILE = b"#file"
#: ``asm_meta`` key of the database's random identity.
FILE_ID_KEY = "file_id"
#: The background thread syncs the marks file at most this often (seconds): a sync per commit
#: competes with DuckDB's own WAL sync for the disk and measurably slows serial commits.
SYNC_INTERVAL = 0.02


def marks_path(db: Path) -> Path:
    return db.with_name(db.name + ".marks")


def read_marks(path: Path) -> dict[str, int] | None:
    """The marks in ``path`` (a later line wins), or None when there is no such file.

    A torn last line (a crash mid-write) and garbage lines are skipped: a mark only ever
    under-states what was committed, so skipping one can hide a loss but never invent one.
    """
    got = _read(path)
    return None if got is None else got.marks


class _Got(NamedTuple):
    marks: dict[str, int]
    #: Bytes of complete lines (where the next line goes).
    used: int
    #: Only zeros follow the last complete line.
    clean: bool
    #: The event count of a clean close, when its line is the last one (nothing written since).
    closed: int | None
    #: The ``file_id`` of the database the file describes (None: a file from before ids).
    file: str | None


def _read(path: Path) -> _Got | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    used = data.rfind(b"\n") + 1
    clean = not data[used:].strip(b"\0")
    marks: dict[str, int] = {}
    closed: int | None = None
    file: str | None = None
    for line in data[:used].split(b"\n")[:-1]:  # the part after the last newline is torn or zeros
        closed = None
        sid, _, seq = line.partition(b" ")
        try:
            if sid == FILE:
                file = seq.decode("ascii")
                continue
            if sid == CLOSED:
                closed = int(seq)
                continue
            marks[sid.decode()] = max(marks.get(sid.decode(), 0), int(seq))
        except (UnicodeDecodeError, ValueError):
            continue
    return _Got(marks, used, clean, closed, file)


def _lines(marks: Mapping[str, int]) -> bytes:
    return b"".join(f"{sid} {seq}\n".encode() for sid, seq in marks.items() if seq > 0)


def file_id(conn: duckdb.DuckDBPyConnection, *, read_only: bool) -> tuple[str | None, bool]:
    """The database's ``file_id`` and whether it had one before this open.

    A file from an older asm-duckdb gets one now (and a checkpoint, so that it is in the
    database file itself, not only in the WAL); a read-only open of such a file has none.
    """
    got = conn.execute("SELECT value FROM asm_meta WHERE key = ?", [FILE_ID_KEY]).fetchone()
    if got is not None:
        return str(got[0]), True
    if read_only:
        return None, False
    made = uuid.uuid4().hex
    conn.execute("INSERT INTO asm_meta VALUES (?, ?)", [FILE_ID_KEY, made])
    conn.execute("CHECKPOINT")
    return made, False


def write_atomically(path: Path, marks: Mapping[str, int], file: str | None) -> int:
    """Replace ``path`` with ``marks`` and room after them, synced, by rename; returns the bytes used."""
    tmp = path.with_name(path.name + ".tmp")
    data = (b"" if file is None else FILE + b" %s\n" % file.encode("ascii")) + _lines(marks)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data + bytes(CHUNK))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory fds
        return len(data)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return len(data)


def stored_marks(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    # The log keeps a row for every event, merged or not: one table, no union.
    rows = conn.execute(f"SELECT session_id, max(seq) FROM {LOG} GROUP BY session_id").fetchall()
    return {sid: int(seq) for sid, seq in rows}


def check(
    conn: duckdb.DuckDBPyConnection, db: Path, where: str, *, read_only: bool, file: tuple[str | None, bool]
) -> tuple[dict[str, int], dict[str, int]]:
    """Compare the marks of ``db`` with its events; returns ``(marks now, events lost per session)``.

    The marks returned are each session's last stored seq, exactly: after a clean close (its
    line is the file's last and its count is the log's) they are the file's; otherwise they are
    read from the log (one ``GROUP BY`` - after a crash, or a file from an older asm-duckdb).
    ``file`` is :func:`file_id`'s answer: a marks file naming another database is ignored.
    Writes nothing when ``read_only``; otherwise records a loss in ``asm_meta`` and rewrites the
    marks file compactly.
    """
    path = marks_path(db)
    got = _read(path)
    ident, had_id = file
    if got is not None and got.file != ident and (got.file is not None or had_id):
        log.info(
            "%s: the marks file %s belongs to another database (file_id %s, not %s); it is ignored and rebuilt",
            where,
            path.name,
            got.file,
            ident,
        )
        got = None
    marks, used, clean, closed, _ = got if got is not None else (None, 0, True, None, None)
    counted = int(conn.execute(f"SELECT count(*) FROM {LOG}").fetchone()[0])  # type: ignore[index]
    lost: dict[str, int] = {}
    if marks is not None and closed == counted and sum(marks.values()) == counted:
        now = marks
    else:
        # Equal sums are not enough: a session may hold more than its mark (a crash between a
        # commit and its mark line) while another lost as many.
        now = stored_marks(conn)
        if marks is None:
            if counted:
                log.info("%s: no marks file (%s); rebuilt it from the %d stored events", where, path.name, counted)
        else:
            lost = {sid: seq - now.get(sid, 0) for sid, seq in marks.items() if seq > now.get(sid, 0)}
    if lost:
        total = sum(lost.values())
        shown = ", ".join(f"{sid}: {n}" for sid, n in sorted(lost.items())[:20])
        more = f" (and {len(lost) - 20} more sessions)" if len(lost) > 20 else ""
        log.warning(
            "%s lost %d committed event(s) in %d session(s) - its write-ahead log (.wal) was truncated or "
            "damaged after a crash; the newest events of these sessions are gone and their next events "
            "will reuse those seqs: %s%s",
            where,
            total,
            len(lost),
            shown,
            more,
        )
        if not read_only:
            _record_loss(conn, lost)
    if not read_only and (marks is None or lost or now != marks or not clean or used > 2 * len(_lines(now)) + 128):
        write_atomically(path, now, ident)
    return dict(now), lost


def _record_loss(conn: duckdb.DuckDBPyConnection, lost: Mapping[str, int]) -> None:
    got = conn.execute("SELECT value FROM asm_meta WHERE key = 'lost_events'").fetchone()
    history = json.loads(got[0]) if got else []
    history.append({"detected_at": datetime.now(UTC).isoformat(), "sessions": dict(lost)})
    conn.execute(
        "INSERT OR REPLACE INTO asm_meta VALUES ('lost_events', ?)", [json.dumps(history, separators=(",", ":"))]
    )


def losses_before(conn: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    """Losses found by earlier opens (``asm_meta.lost_events``), oldest first."""
    got = conn.execute("SELECT value FROM asm_meta WHERE key = 'lost_events'").fetchone()
    return list(json.loads(got[0])) if got else []


class Marks:
    """The open marks file: written by the writer thread, synced by a background thread."""

    def __init__(self, db: Path, marks: dict[str, int], file: str | None) -> None:
        self.path = marks_path(db)
        self.marks = marks
        self.file = file
        self._lock = threading.Lock()
        got = _read(self.path)
        self._size = got.used if got is not None else 0  # where the next line goes
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        self._room = os.fstat(self._fd).st_size
        self._compact = max(self._size, 1)
        self._dirty = threading.Event()
        self._wake = threading.Event()  # set by close(): no more waiting
        self._closing = False
        self.syncs = 0
        self.failed: OSError | None = None
        self._thread = threading.Thread(target=self._sync_loop, name=f"asm-duckdb-marks:{db.name}", daemon=True)
        self._thread.start()

    def committed(self, seqs: Mapping[str, int]) -> None:
        """Record the sessions' committed seqs (called after the commit, before any answer)."""
        fresh = {sid: seq for sid, seq in seqs.items() if seq > self.marks.get(sid, 0)}
        if not fresh:
            return
        data = _lines(fresh)
        with self._lock:
            self.marks.update(fresh)
            try:
                while self._size + len(data) > self._room:
                    os.pwrite(self._fd, bytes(CHUNK), self._room)
                    self._room += CHUNK
                os.pwrite(self._fd, data, self._size)
            except OSError as exc:  # the disk is full: the check at open may miss a loss, no more
                self._failed(exc)
                return
            self._size += len(data)
        self._dirty.set()

    def _failed(self, exc: OSError) -> None:
        if self.failed is None:
            log.error("writing the marks file %s failed: %s; a WAL loss may go undetected", self.path, exc)
        self.failed = exc

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing:
                return
            self._wake.wait(SYNC_INTERVAL)  # let the commits of the next few ms share this sync
            self._dirty.clear()
            if self._closing:
                return
            try:
                os.fdatasync(self._fd)
                self.syncs += 1
                if self._size > COMPACT_MIN and self._size > 4 * self._compact:
                    self._rewrite()
            except OSError as exc:
                self._failed(exc)

    def _rewrite(self) -> None:
        with self._lock:
            snapshot = dict(self.marks)
            size = write_atomically(self.path, snapshot, self.file)
            fd = os.open(self.path, os.O_WRONLY)
            old, self._fd = self._fd, fd
            self._size = size
            self._compact = max(size, 1)
            self._room = os.fstat(fd).st_size
        os.close(old)

    def close(self, clean: bool = False) -> None:
        """Stop syncing and close the file; ``clean``: every commit is in the file and its marks
        are written, so a last line records the log's size and the next open can trust them."""
        self._closing = True
        self._wake.set()
        self._dirty.set()
        self._thread.join()
        try:
            if clean and self.failed is None:
                line = CLOSED + b" %d\n" % sum(self.marks.values())
                with self._lock:
                    os.pwrite(self._fd, line, self._size)
                    self._size += len(line)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._failed(exc)
        os.close(self._fd)
