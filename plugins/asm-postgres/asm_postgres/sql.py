"""Every statement the store runs, built once per schema.

Statement texts are constant for a store, so psycopg prepares each on a connection after a few
uses and the server plans it once.
"""

from __future__ import annotations

from typing import Any

from .rows import EVENT_COLS, RUN_COLS, SESSION_COLS, columns
from .schema import quote_ident

__all__ = ["Statements", "channel_for"]

#: Runs that hold their session's place: queued, executing, or waiting for a person.
_LIVE = "('pending', 'running', 'awaiting_approval')"


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema (identifiers are at most 63 bytes)."""
    return f"asm_{schema}"[:63]


def _unnest(table: str, alias: str = "u") -> tuple[str, str]:
    """``unnest(%s::t[], ...) AS u(c, ...)`` over ``table``'s columns, and the select list with casts."""
    cols = columns(table)
    source = ", ".join(f"%s::{t}[]" for _, t, _ in cols)
    names = ", ".join(c for c, _, _ in cols)
    select = ", ".join(f"{alias}.{c}{cast}" for c, _, cast in cols)
    return f"unnest({source}) AS {alias}({names})", select


class Statements:
    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self.schema = schema
        self.channel = channel_for(schema)
        sessions, runs, events = f"{s}.sessions", f"{s}.runs", f"{s}.events"

        # -- the write unit -----------------------------------------------------------------
        # The session row lock serializes every unit of a session; the clock is read after the
        # lock is granted (the row is produced only then), and it judges leases.
        self.lock_session = (
            f"SELECT clock_timestamp(), x.* FROM (SELECT 1) AS one LEFT JOIN LATERAL "
            f"(SELECT {SESSION_COLS}, last_seq FROM {sessions} WHERE id = %s FOR UPDATE) AS x ON true"
        )
        self.events_by_id = f"SELECT {EVENT_COLS} FROM {events} WHERE id = ANY(%s::text[])"
        # Id order: two units locking the same runs take the locks in the same order.
        self.lock_runs = f"SELECT {RUN_COLS} FROM {runs} WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE"
        self.live_runs = (
            f"SELECT id FROM {runs} WHERE session_id = %s AND status IN {_LIVE} ORDER BY created_at, id LIMIT 20"
        )
        self.keys = (
            f"SELECT idempotency_key, id FROM {runs} WHERE session_id = %s AND idempotency_key = ANY(%s::text[])"
        )
        scols = SESSION_COLS
        self.insert_session = (
            f"INSERT INTO {sessions} ({scols}, last_seq) VALUES (%s, %s, %s, %s::json, %s::text[], %s, %s, %s)"
        )
        self.update_session = (
            f"UPDATE {sessions} SET agent_id = %s, status = %s, metadata = %s::json, tags = %s::text[], "
            f"created_at = %s, updated_at = %s, last_seq = %s WHERE id = %s"
        )
        source, select = _unnest("runs")
        self.insert_runs = f"INSERT INTO {runs} ({RUN_COLS}) SELECT {select} FROM {source}"
        sets = ", ".join(f"{c} = u.{c}{cast}" for c, _, cast in columns("runs")[1:])
        self.update_runs = f"UPDATE {runs} SET {sets} FROM {source} WHERE {runs}.id = u.id"
        source, select = _unnest("events")
        ecols = ", ".join(c for c, _, _ in columns("events"))
        insert_events = f"INSERT INTO {events} ({ecols}) SELECT {select} FROM {source}"
        # One round trip stores the events and bumps the session's seq counter; the last column
        # sets synchronous_commit for this transaction only ("fast" durability). No NOTIFY here:
        # a transaction that notifies holds a database-wide lock through its commit's WAL flush,
        # which would serialize every writer of the database (see listener.Announcer).
        tail = "SELECT set_config('synchronous_commit', %s, true)"
        self.append_and_bump = (
            f"WITH e AS ({insert_events}), b AS (UPDATE {sessions} SET last_seq = %s WHERE id = %s) {tail}"
        )
        self.append_only = f"WITH e AS ({insert_events}) {tail}"
        self.clock = "SELECT clock_timestamp()"
        self.notify = "SELECT pg_notify(%s, note) FROM unnest(%s::text[]) AS note"

        # -- reads --------------------------------------------------------------------------
        self.get_session = f"SELECT {SESSION_COLS} FROM {sessions} WHERE id = %s"
        self.session_exists = f"SELECT last_seq FROM {sessions} WHERE id = %s"
        self.get_run = f"SELECT {RUN_COLS} FROM {runs} WHERE id = %s"
        self.run_by_key = f"SELECT {RUN_COLS} FROM {runs} WHERE session_id = %s AND idempotency_key = %s"
        self.sessions = sessions
        self.runs = runs
        self.events = events
        self.last = (
            f"SELECT * FROM (SELECT {EVENT_COLS} FROM {events} WHERE session_id = %s ORDER BY seq DESC LIMIT %s) "
            f"AS t ORDER BY seq"
        )

        # -- the run queue and leases -------------------------------------------------------
        # Candidate sessions: their oldest claimable run first, not paused or ended, not at
        # their running limit by this statement's snapshot. Locked SKIP LOCKED: a session another
        # claimer (or a unit) holds is left for the next round rather than waited for; the
        # exact per-session decision is made afterwards under the lock, on a fresh snapshot.
        self.claim_sessions = f"""
            WITH pend AS (
                SELECT session_id, min(created_at) AS first_at FROM {runs}
                WHERE status = 'pending' AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
                GROUP BY session_id
            ), busy AS (
                SELECT r.session_id, count(*) AS n FROM {runs} AS r JOIN pend USING (session_id)
                WHERE r.status IN ('running', 'awaiting_approval')
                   OR (r.status = 'pending' AND r.lease_expires_at > clock_timestamp())
                GROUP BY r.session_id
            )
            SELECT s.id FROM {sessions} AS s JOIN pend AS p ON p.session_id = s.id
            LEFT JOIN busy AS b ON b.session_id = s.id
            WHERE s.id <> ALL(%s::text[]) AND s.status IN ('pending', 'active') AND coalesce(b.n, 0) < %s
            ORDER BY p.first_at, s.id
            LIMIT %s
            FOR UPDATE OF s SKIP LOCKED"""
        self.claim_state = (
            f"SELECT id, session_id, status, lease_expires_at IS NOT NULL AND lease_expires_at > clock_timestamp() "
            f"FROM {runs} WHERE session_id = ANY(%s::text[]) AND status IN {_LIVE} "
            f"ORDER BY created_at, id"
        )
        self.claim = (
            f"UPDATE {runs} SET owner = %s, lease_token = lease_token + 1, "
            f"lease_expires_at = clock_timestamp() + make_interval(secs => %s) "
            f"WHERE id = ANY(%s::text[]) AND status = 'pending' RETURNING {RUN_COLS}"
        )
        # Locks taken in id order (the subquery), so two renewals never deadlock each other.
        self.renew = (
            f"UPDATE {runs} SET lease_expires_at = clock_timestamp() + make_interval(secs => %s) "
            f"WHERE id IN (SELECT r.id FROM {runs} AS r JOIN unnest(%s::text[], %s::int8[]) AS f(id, token) "
            f"ON r.id = f.id AND r.lease_token = f.token WHERE r.status = 'running' ORDER BY r.id FOR UPDATE OF r) "
            f"RETURNING id, lease_token"
        )

    # -- reads with filters: one statement text per combination of filters ------------------

    def read_events(self, *, before: bool = False, types: bool = False, run_id: bool = False) -> str:
        """``session_id = %s AND seq > %s`` [``AND seq < %s``] [types] [run] ``ORDER BY seq LIMIT %s``."""
        where = "session_id = %s AND seq > %s"
        if before:
            where += " AND seq < %s"
        if types:
            where += " AND type = ANY(%s::text[])"
        if run_id:
            where += " AND run_id = %s"
        # LIMIT NULL is no limit: one text whatever the limit, so one prepared plan.
        return f"SELECT {EVENT_COLS} FROM {self.events} WHERE {where} ORDER BY seq LIMIT %s"

    def list_sessions(self, *, status: bool, agent_id: bool, tag: bool) -> str:
        parts = [c for c, on in (("status = %s", status), ("agent_id = %s", agent_id),
                                 ("tags @> ARRAY[%s]::text[]", tag)) if on]
        where = " WHERE " + " AND ".join(parts) if parts else ""
        return (
            f"SELECT {SESSION_COLS} FROM {self.sessions}{where} "
            "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
        )

    def list_runs(self, *, session_id: bool, status: bool, lease_expired: bool | None) -> str:
        parts = [c for c, on in (("session_id = %s", session_id), ("status = %s", status)) if on]
        # Leases are judged by the database clock, like everywhere else.
        if lease_expired is True:
            parts.append("status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())")
        elif lease_expired is False:
            parts.append("status = 'running' AND lease_expires_at > clock_timestamp()")
        where = " WHERE " + " AND ".join(parts) if parts else ""
        return f"SELECT {RUN_COLS} FROM {self.runs}{where} ORDER BY created_at, id LIMIT %s OFFSET %s"


def present(*values: Any) -> list[Any]:
    """The parameters of the filters that are set, in order."""
    return [v for v in values if v is not None]
