"""The shared run queue: claims with ``FOR UPDATE SKIP LOCKED``, and lease renewals.

A claim runs in one transaction:

1. pick candidate sessions — those with a claimable pending run (never claimed, or its claim
   expired), ``pending`` or ``active``, below ``max_running_per_session`` by this statement's
   snapshot — oldest waiting run first, and lock their rows ``FOR UPDATE SKIP LOCKED``. A
   session another worker is claiming from, or a unit is writing to, is skipped (not waited
   for): concurrent claimers spread over sessions instead of queueing behind each other;
2. on a fresh snapshot, under those locks, read each locked session's live runs and decide
   exactly as the memory store does: oldest pending first, per-session FIFO, a session's running
   runs and live claims count against its limit;
3. give the chosen runs ``owner``, ``lease_token + 1`` and an expiry of the database clock plus
   ``lease_ttl``, still ``pending``; the worker starts each with a unit conditional on its token.

Every change to a session's runs goes through a unit, which takes the same session lock, so
the decision in (2) cannot be overtaken: two workers never get the same run, a session's FIFO
order and running limit hold across all workers and processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asm_kernel.model import Fence, Run

from .rows import run_from_row
from .sql import Statements

__all__ = ["claim", "renew"]

#: Rounds of candidate sessions one claim locks before it settles for fewer than ``limit`` runs.
_ROUNDS = 4


def _decide(rows: list[tuple[Any, ...]], limit: int, max_running: int) -> list[str]:
    """The memory store's rule over one batch of locked sessions' live runs (oldest first)."""
    busy: dict[str, int] = {}
    for _, session_id, status, held in rows:
        if status != "pending" or held:  # running or awaiting approval: the session's place is taken
            busy[session_id] = busy.get(session_id, 0) + 1
    chosen: list[str] = []
    for run_id, session_id, status, held in rows:
        if len(chosen) >= limit:
            break
        if status != "pending" or held or busy.get(session_id, 0) >= max_running:
            continue
        busy[session_id] = busy.get(session_id, 0) + 1
        chosen.append(run_id)
    return chosen


async def claim(
    conn: Any, sql: Statements, owner: str, *, limit: int, lease_ttl: float, max_running_per_session: int
) -> list[Run]:
    """Claim up to ``limit`` runs inside the caller's open transaction (see the module docstring).

    Each round locks only as many sessions as runs are still wanted, so concurrent claimers do
    not hold sessions they will not claim from; a session that turns out full on the exact check
    is replaced by the next round's candidates.
    """
    chosen: list[str] = []
    seen: list[str] = []
    for _ in range(_ROUNDS):
        want = limit - len(chosen)
        cur = await conn.execute(sql.claim_sessions, [seen, max_running_per_session, want])
        sessions = [r[0] for r in await cur.fetchall()]
        if not sessions:
            break
        seen.extend(sessions)
        cur = await conn.execute(sql.claim_state, [sessions])
        chosen.extend(_decide(list(await cur.fetchall()), want, max_running_per_session))
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    cur = await conn.execute(sql.claim, [owner, float(lease_ttl), chosen])
    claimed = [run_from_row(r) for r in await cur.fetchall()]
    claimed.sort(key=lambda r: (r.created_at, r.id))
    return claimed


async def renew(conn: Any, sql: Statements, fences: Sequence[Fence], ttl: float) -> set[tuple[str, int]]:
    """Extend each current lease of a running run to the database clock + ``ttl``.

    Returns the (run id, token) pairs renewed; every other fence's lease is lost.
    """
    if not fences:
        return set()
    cur = await conn.execute(sql.renew, [float(ttl), [f.run_id for f in fences], [f.token for f in fences]])
    return {(r[0], int(r[1])) for r in await cur.fetchall()}
