"""Where events live in the file: an append-only log of every event, and sorted levels.

DuckDB answers ``WHERE session_id = ? AND seq > ?`` with a sequential scan (an ART index is used
only for a single-column equality), so a read costs what the *file* holds unless the rows of one
session sit together: then the zone maps (min/max per row group) skip every other row group.
Rows arrive interleaved - many sessions write at once - so the layout is:

* ``events_log``: every event ever stored, in commit order, numbered by ``n`` (a counter the
  writer assigns; it only grows). A commit writes this one table, in one statement, and its
  ``UNIQUE (id)`` index keeps event ids unique over the whole store. Rows of the last
  ``hot_events`` or so events are *hot*: they carry the whole event. Older rows have been
  *merged*: their event lives in a level, and the row keeps only what identifies it (id,
  session, seq, ``n``) with ``payload`` NULL. Reads find the hot rows by ``n >`` the merge mark,
  which the zone maps of ``n`` answer with the last few row groups;
* ``events_l1`` .. ``events_l3``: levels holding whole events **sorted by (skey, seq)**, each up
  to :data:`FANOUT` times the one before (``events_l3`` is unbounded). ``skey`` is
  :func:`session_key` of the session id, a stable 63-bit hash: an integer key whose zone maps are
  exact whatever session ids look like (ids sharing long prefixes defeat string statistics);
* ``events``: a view of every event (hot log rows and the levels), the one name for SQL users.

When the hot rows reach ``hot_events``, :class:`~asm_duckdb.compactor.Compactor` rewrites the
smallest level that can take them together with every level below it, sorted, and clears the
merged log rows' payloads - one transaction on its own connection, while the writer keeps
appending (a merge takes only the rows its snapshot sees, and those are always a prefix of
``n``). A read then touches the hot row groups of the log and about one row group per level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "LOG",
    "LEVELS",
    "EVENT_TABLES",
    "FANOUT",
    "HOT_EVENTS",
    "LOG_DDL",
    "LEVEL_COLUMNS",
    "EVENT_NAMES",
    "HOT_ROWS",
    "VIEW",
    "MARK_KEY",
    "session_key",
    "level_caps",
    "merge_target",
    "select_events",
    "Filled",
    "filled_levels",
]

LOG = "events_log"
LEVELS: tuple[str, ...] = ("events_l1", "events_l2", "events_l3")
EVENT_TABLES: tuple[str, ...] = (LOG, *LEVELS)
#: Each level holds up to this many times the rows of the one below it.
FANOUT = 10
#: Default ``hot_events``: hot rows a merge waits for.
HOT_EVENTS = 100_000
#: ``asm_meta`` key of the merge mark: every log row with ``n`` at or below it is merged.
MARK_KEY = "merged_upto"

#: The event columns, in the order rows are kept (:data:`asm_duckdb.codec.Row`) plus ``skey``.
EVENT_NAMES = "id, session_id, seq, run_id, type, payload, ts, schema_version, skey"
LEVEL_COLUMNS = (
    "id VARCHAR NOT NULL, session_id VARCHAR NOT NULL, seq BIGINT NOT NULL, run_id VARCHAR, "
    "type VARCHAR NOT NULL, payload VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, "
    "schema_version INTEGER NOT NULL, skey BIGINT NOT NULL"
)
LOG_DDL = (
    f"CREATE TABLE {LOG} (id VARCHAR NOT NULL UNIQUE, session_id VARCHAR NOT NULL, seq BIGINT NOT NULL, "
    "run_id VARCHAR, type VARCHAR, payload VARCHAR, ts TIMESTAMPTZ, schema_version INTEGER, "
    "skey BIGINT NOT NULL, n BIGINT NOT NULL)"
)
#: The log rows that are whole events (not merged).
HOT_ROWS = "payload IS NOT NULL"
VIEW = (
    f"CREATE OR REPLACE VIEW events AS SELECT {EVENT_NAMES} FROM {LOG} WHERE {HOT_ROWS} "
    + "".join(f"UNION ALL SELECT {EVENT_NAMES} FROM {t} " for t in LEVELS)
).strip()


def session_key(session_id: object) -> int:
    """The ``skey`` of a session: the first 8 bytes of its BLAKE2b digest, as a signed BIGINT.

    Stable across processes, Python and DuckDB versions (DuckDB's ``hash()`` is not promised to
    be). Two sessions may share a key; every reader compares ``session_id`` too.
    """
    text = session_id if isinstance(session_id, str) else str(session_id)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def level_caps(hot_events: int) -> tuple[int | None, ...]:
    """Most rows each level may hold after a merge into it (None: unbounded)."""
    caps: list[int | None] = [hot_events * FANOUT**i for i in range(1, len(LEVELS))]
    return (*caps, None)


def merge_target(sizes: Sequence[int], hot: int, hot_events: int) -> int:
    """Index into :data:`LEVELS` of the level a merge of ``hot`` hot rows rewrites.

    The smallest level ``i`` such that it, every level below it and the hot rows fit its cap;
    all of those are merged into it (the lower levels end up empty).
    """
    incoming = hot
    for i, cap in enumerate(level_caps(hot_events)):
        incoming += sizes[i]
        if cap is None or incoming <= cap:
            return i
    raise AssertionError("the last level is unbounded")


def select_events(
    columns: str, where: str, params: Sequence[object], mark: int, levels: Sequence[str] = LEVELS
) -> tuple[str, list[object]]:
    """One query over the hot log rows and the ``levels``, each part filtered by ``where``.

    ``where`` uses ``?`` placeholders bound by ``params`` (repeated for each part). ``mark`` is a
    merge mark read *before* the query starts: a mark at or below the real one is always right
    (merged rows have no payload and are skipped); it only lets DuckDB skip the merged row groups.
    ``levels`` may leave out levels known to be empty (see :class:`Filled`): each part costs
    about a millisecond to plan and scan, rows or not.
    """
    parts = [f"SELECT {columns} FROM {LOG} WHERE n > ? AND {HOT_ROWS} AND {where}"]
    parts += [f"SELECT {columns} FROM {t} WHERE {where}" for t in levels]
    return " UNION ALL ".join(parts), [mark, *params, *(list(params) * len(levels))]


@attrs.frozen
class Filled:
    """The levels that may hold rows, and an epoch that grows whenever a level is added.

    A merge adds its target level (new epoch) *before* it commits and removes the levels it
    emptied only *after*, so a read that takes ``Filled`` before its query and finds the same
    epoch after it has queried every level its snapshot could find rows in. A read that finds a
    new epoch queries again over every level (a merge into a new level ran meanwhile: rare).
    """

    epoch: int
    levels: tuple[str, ...]

    def adding(self, level: str) -> Filled:
        if level in self.levels:
            return self
        return Filled(self.epoch + 1, tuple(t for t in LEVELS if t in self.levels or t == level))

    def without(self, emptied: Sequence[str]) -> Filled:
        return Filled(self.epoch, tuple(t for t in self.levels if t not in emptied))


def filled_levels(conn: duckdb.DuckDBPyConnection) -> Filled:
    """The levels holding rows now (a count per level: row-group metadata, no scan)."""
    counts = [int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in LEVELS]  # type: ignore[index]
    return Filled(0, tuple(t for t, c in zip(LEVELS, counts, strict=True) if c))
