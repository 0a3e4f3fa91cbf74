"""Reading sessions and runs for a caller: tenancy applied, JSON shapes, summaries, paging.

Every lookup by id goes through :func:`visible_session` / :func:`visible_run`, which answer a
session of another tenant exactly like a missing one. A list of a tenant's sessions is the
store's list for each of its agents, merged in the store's order (newest first), so paging
works the same for one agent or several.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import RunNotFoundError, SessionNotFoundError
from asm_kernel.model import Run, Session, SessionStatus, Usage
from asm_kernel.serialization import to_dict
from starlette.requests import Request

from .auth import Principal, run_not_found, session_not_found

if TYPE_CHECKING:
    from asm_kernel.kernel import Kernel

    from .state import ServeState

__all__ = ["Ctx", "context", "visible_session", "visible_run", "all_runs", "summary", "list_sessions"]

_PAGE = 500


class Ctx:
    """A request's server state and caller."""

    __slots__ = ("kernel", "principal", "state")

    def __init__(self, state: ServeState, principal: Principal) -> None:
        self.state = state
        self.principal = principal
        self.kernel: Kernel = state.kernel


def context(request: Request) -> Ctx:
    """Authenticate the request (401 without a known key) and return its context."""
    state: ServeState = request.app.state.asm
    principal = state.auth.authenticate(request.headers.get("authorization"))
    request.scope["asm.principal"] = principal.name
    return Ctx(state, principal)


async def visible_session(ctx: Ctx, session_id: str) -> Session:
    try:
        session = await ctx.kernel.sessions.get(session_id)
    except SessionNotFoundError:
        raise session_not_found(session_id) from None
    return ctx.principal.check(session)


async def visible_run(ctx: Ctx, run_id: str) -> tuple[Run, Session]:
    try:
        run = await ctx.kernel.sessions.get_run(run_id)
    except RunNotFoundError:
        raise run_not_found(run_id) from None
    try:
        session = await visible_session(ctx, run.session_id)
    except SessionNotFoundError:
        raise run_not_found(run_id) from None  # another tenant's run: as if it did not exist
    return run, session


async def all_runs(kernel: Kernel, session_id: str) -> list[Run]:
    """Every run of the session, oldest first, read in pages."""
    found: list[Run] = []
    while True:
        page = await kernel.sessions.runs(session_id, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            return found


async def summary(kernel: Kernel, session: Session) -> dict[str, Any]:
    """What the inspector's session list shows: runs, provider, usage, cost, last activity."""
    runs = await all_runs(kernel, session.id)
    last = await kernel.store.last(session.id, 1)
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.status.value] = by_status.get(run.status.value, 0) + 1
    answered = [r for r in runs if r.provider]
    costs = [r.cost for r in runs if r.cost is not None]
    return {
        "last_seq": last[-1].seq if last else 0,
        "last_activity": (last[-1].timestamp if last else session.updated_at).isoformat(),
        "runs": len(runs),
        "runs_by_status": by_status,
        "provider": answered[-1].provider if answered else None,
        "model": answered[-1].model if answered else None,
        "usage": to_dict(sum((r.usage for r in runs), Usage())),
        "cost": sum(costs) if costs else None,
        "failed_runs": sum(1 for r in runs if r.error),
    }


def _key(session: Session) -> tuple[Any, str]:
    return (session.created_at, session.id)


async def list_sessions(
    ctx: Ctx,
    *,
    status: SessionStatus | None,
    agent_id: str | None,
    tag: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Session], bool]:
    """A page of the sessions the caller may see, and whether there are more."""
    scope = ctx.principal.agent_ids
    store_list = ctx.kernel.sessions.list
    if scope is None or agent_id is not None:
        if agent_id is not None and not ctx.principal.sees(agent_id):
            return [], False  # another tenant's agent: nothing, as for an agent with no sessions
        page = await store_list(status=status, agent_id=agent_id, tag=tag, limit=limit + 1, offset=offset)
        return page[:limit], len(page) > limit
    # A tenant with several agents: each agent's list is newest first, so the first
    # offset+limit+1 of the merge come from the first offset+limit+1 of each.
    want = offset + limit + 1
    lists = [await store_list(status=status, agent_id=a, tag=tag, limit=want, offset=0) for a in sorted(scope)]
    merged = list(heapq.merge(*lists, key=_key, reverse=True))
    return merged[offset : offset + limit], len(merged) > offset + limit
