"""Merging the hot log rows into the sorted levels (see :mod:`asm_duckdb.layout`), off the write path.

A merge is one transaction on the compactor's own cursor: it rewrites the target level as the
sorted union of itself, every level below it and the hot log rows its snapshot sees, empties
those lower levels, clears the payload of those log rows and moves the merge mark past them.
Writers keep appending to the log meanwhile (rows committed after the merge's snapshot are
neither copied nor cleared) and readers keep their own snapshots, so a merge changes where
events are, never which events there are. A merge that fails (disk full, interrupted by
``close()``, a crash) rolls back whole: the file is as before it.

The thread sleeps until a commit finds (from the store's event counter, no query) that the hot
rows may have reached ``hot_events``, then counts them in the merge's own snapshot and merges.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from asm_kernel.errors import StoreClosedError

from .layout import EVENT_NAMES, HOT_ROWS, LEVELS, LOG, MARK_KEY, filled_levels, merge_target

if TYPE_CHECKING:
    import duckdb

__all__ = ["Compactor", "Merge", "POLL"]

log = logging.getLogger("asm.duckdb")

#: Longest sleep between two looks at the event counter.
POLL = 5.0
#: After a failed merge, wait this long (doubling up to ten minutes) before the next try.
RETRY_FIRST = 5.0
RETRY_MAX = 600.0


@attrs.frozen
class Merge:
    """What one merge did: ``rows`` events from the hot log rows and the levels below went into ``level``."""

    level: str
    hot_rows: int
    rows: int
    seconds: float


class Compactor:
    """The background merger of one open store; :attr:`mark` is its merge mark."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        where: str,
        hot_events: int,
        events_written: Callable[[], int],
        mark: int,
    ) -> None:
        self.cur = conn.cursor()
        # DuckDB draws a progress bar on stderr for long statements; a library must not print.
        self.cur.execute("SET enable_progress_bar = false")
        self.where = where
        self.hot_events = hot_events
        self._written = events_written
        #: Every log row numbered at or below the mark is merged. Published after the commit
        #: that made it true, so a reader that sees it starts its snapshot after that commit.
        self.mark = mark
        self._lock = threading.Lock()  # one merge at a time (the thread's or compact()'s)
        self._wake = threading.Event()
        self._closing = False
        self._merging = False
        self._retry_delay = RETRY_FIRST
        self._retry_at = 0.0
        self.merges: list[Merge] = []
        self.hot = self._hot_rows(self.cur, mark, None)
        #: The levels reads must query (see :class:`~asm_duckdb.layout.Filled`).
        self.filled = filled_levels(self.cur)
        self._seen = events_written()
        self.thread = threading.Thread(target=self._main, name=f"asm-duckdb-compact:{where}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Stop: a merge in progress is interrupted and rolls back."""
        self._closing = True
        self._wake.set()
        if self._merging:
            try:
                self.cur.interrupt()
            except Exception:  # pragma: no cover - interrupting a finished query
                pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()
        with self._lock:  # a compact() call's merge (interrupted above) ends before its cursor
            try:
                self.cur.close()
            except Exception:  # pragma: no cover - closing twice
                pass

    def poke(self) -> None:
        """Wake the thread if the hot rows may have reached ``hot_events`` (after commits; a compare)."""
        if self.hot + self._written() - self._seen >= self.hot_events:
            self._wake.set()

    @staticmethod
    def _hot_rows(cur: duckdb.DuckDBPyConnection, mark: int, upto: int | None) -> int:
        sql = f"SELECT count(*) FROM {LOG} WHERE n > ? AND {HOT_ROWS}"
        params = [mark]
        if upto is not None:
            sql += " AND n <= ?"
            params.append(upto)
        return int(cur.execute(sql, params).fetchone()[0])  # type: ignore[index]

    def _check_closing(self) -> None:
        # An interrupt sent between two statements would be lost: look before each long one.
        if self._closing:
            raise StoreClosedError(f"the duckdb store {self.where} is closing; the merge was abandoned")

    def _count(self, table: str) -> int:
        return int(self.cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    def _main(self) -> None:
        while not self._closing:
            self._wake.wait(POLL)  # also a safety net for a poke that raced the counter
            self._wake.clear()
            if self._closing:
                return
            written = self._written()
            if self.hot + written - self._seen < self.hot_events or time.monotonic() < self._retry_at:
                continue
            try:
                self.merge(full=False, at_least=self.hot_events)
                self._retry_delay = RETRY_FIRST
            except Exception as exc:
                if self._closing:
                    return
                self._retry_at = time.monotonic() + self._retry_delay
                log.warning(
                    "merging the hot events of %s failed (retrying in %.0f s; reads stay correct, only slower): %s",
                    self.where,
                    self._retry_delay,
                    exc,
                )
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def merge(self, *, full: bool, at_least: int = 0) -> Merge | None:
        """Run one merge now (``full``: everything into the last level); None if there was nothing to do."""
        import duckdb

        with self._lock:
            written = self._written()
            cur = self.cur
            started = time.perf_counter()
            mark = self.mark
            self._merging = True
            try:
                cur.execute("BEGIN TRANSACTION")
                try:
                    self._check_closing()
                    # The rows this snapshot sees past the mark are a prefix of n: the writer
                    # numbers rows in commit order on one connection.
                    got = cur.execute(f"SELECT max(n) FROM {LOG} WHERE n > ?", [mark]).fetchone()
                    upto = mark if got is None or got[0] is None else int(got[0])
                    hot = self._hot_rows(cur, mark, upto)
                    sizes = [self._count(t) for t in LEVELS]
                    below_last: int = sum(sizes[:-1])
                    if hot < max(at_least, 1) and not (full and below_last > 0):
                        cur.execute("ROLLBACK")
                        self.hot, self._seen = hot, written
                        return None
                    target = len(LEVELS) - 1 if full else merge_target(sizes, hot, self.hot_events)
                    name = LEVELS[target]
                    # Before the commit: a read from now on queries the level the rows move to.
                    self.filled = self.filled.adding(name)
                    parts = [f"SELECT {EVENT_NAMES} FROM {t}" for t in LEVELS[: target + 1]]
                    parts.append(f"SELECT {EVENT_NAMES} FROM {LOG} WHERE n > {mark} AND n <= {upto} AND {HOT_ROWS}")
                    # CREATE OR REPLACE writes the sorted rows as new row groups and drops the
                    # old ones in the same commit; the events view binds by name, so it follows.
                    union = " UNION ALL ".join(parts)
                    self._check_closing()
                    cur.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM ({union}) ORDER BY skey, seq")
                    for lower in LEVELS[:target]:
                        cur.execute(f"CREATE OR REPLACE TABLE {lower} AS SELECT * FROM {lower} LIMIT 0")
                    # The merged rows keep what identifies them (their id stays unique).
                    cur.execute(
                        f"UPDATE {LOG} SET run_id = NULL, type = NULL, payload = NULL, ts = NULL, "
                        f"schema_version = NULL WHERE n > ? AND n <= ? AND {HOT_ROWS}",
                        [mark, upto],
                    )
                    cur.execute("INSERT OR REPLACE INTO asm_meta VALUES (?, ?)", [MARK_KEY, str(upto)])
                    self._check_closing()
                    cur.execute("COMMIT")
                except BaseException:
                    try:
                        cur.execute("ROLLBACK")
                    except duckdb.Error:
                        pass
                    raise
            finally:
                self._merging = False
            self.mark = upto
            # After the commit: a read that starts now cannot find rows in the emptied levels.
            self.filled = self.filled.without(LEVELS[:target])
            # Rows committed after the snapshot are still hot.
            self._seen = self._written()
            self.hot = self._hot_rows(cur, upto, None)
            rows = hot + sum(sizes[: target + 1])
            done = Merge(name, hot, rows, time.perf_counter() - started)
            self.merges.append(done)
            del self.merges[:-20]
            log.info(
                "%s: merged %d hot event(s) into %s (%d rows) in %.2f s", self.where, hot, name, rows, done.seconds
            )
            return done
