"""Session routes: create, list, get, lifecycle, queue status and drain, transcript, cost."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from asm_kernel.errors import ValidationError
from asm_kernel.model import SessionStatus
from asm_kernel.serialization import to_dict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .http import Query, body_object, json_response, read_json
from .seams import builtin_cost_report, cost_reporter_of
from .views import Ctx, all_runs, context, list_sessions, summary, visible_session

__all__ = ["routes", "LIFECYCLE", "MAX_PAGE", "agent_for_new_session"]

#: Largest page any list route returns.
MAX_PAGE = 1000
#: Lifecycle actions: route name -> (SessionManager method, whether it takes a reason).
LIFECYCLE: dict[str, tuple[str, bool]] = {
    "activate": ("activate", False),
    "pause": ("pause", True),
    "resume": ("resume", False),
    "complete": ("complete", False),
    "fail": ("fail", True),
    "cancel": ("cancel", True),
}
_CREATE_FIELDS = frozenset({"id", "agent_id", "metadata", "tags"})


def agent_for_new_session(ctx: Ctx, agent_id: Any) -> str | None:
    """The agent of a session the caller creates: what it asked for, if its key may use it.

    A tenant key with one agent needs not name it; one with several must.
    """
    scope = ctx.principal.agent_ids
    if agent_id is not None and (not isinstance(agent_id, str) or not agent_id.strip()):
        raise ValidationError("agent_id must be a non-empty string", path="agent_id")
    if scope is None:
        return agent_id
    if agent_id is None:
        if len(scope) == 1:
            return next(iter(scope))
        raise ValidationError("agent_id is required: this key may use several agents", path="agent_id",
                              hint=f"one of: {', '.join(sorted(scope))}")
    if agent_id not in scope:
        from .errors import ForbiddenError

        raise ForbiddenError(f"this key may not create sessions for agent {agent_id[:100]!r}",
                             hint=f"agents of this key: {', '.join(sorted(scope))}")
    return agent_id


async def create_session(request: Request) -> Response:
    ctx = context(request)
    body = body_object(await read_json(request, ctx.state.settings.max_body_bytes, required=False), _CREATE_FIELDS)
    agent_id = agent_for_new_session(ctx, body.get("agent_id"))
    if body.get("id") is not None and not ctx.principal.operator:
        from .errors import ForbiddenError

        # A tenant choosing ids could learn, from a conflict, which ids other tenants use.
        raise ForbiddenError("this key may not choose session ids", hint="leave `id` out: the server makes one")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValidationError("tags must be a list of strings", path="tags")
    session = await ctx.kernel.sessions.create(
        agent_id=agent_id, metadata=body.get("metadata"), tags=tags, session_id=body.get("id")
    )
    data = to_dict(session)
    data["summary"] = await summary(ctx.kernel, session)
    return json_response(data, 201, headers={"Location": f"/v1/sessions/{quote(session.id, safe='')}"})


async def get_sessions(request: Request) -> Response:
    ctx = context(request)
    q = Query(request)
    status_text = q.text("status")
    if status_text is not None and status_text not in SessionStatus._value2member_map_:
        raise ValidationError(
            f"unknown session status {status_text[:40]!r}",
            path="status",
            hint=f"use one of {', '.join(s.value for s in SessionStatus)}",
        )
    limit = q.integer("limit", 50, minimum=1, maximum=MAX_PAGE) or 50
    offset = q.integer("offset", 0) or 0
    sessions, more = await list_sessions(
        ctx,
        status=SessionStatus(status_text) if status_text else None,
        agent_id=q.text("agent_id"),
        tag=q.text("tag"),
        limit=limit,
        offset=offset,
    )
    items = [to_dict(s) for s in sessions]
    if q.boolean("summary"):
        summaries = await asyncio.gather(*(summary(ctx.kernel, s) for s in sessions))
        for item, extra in zip(items, summaries, strict=True):
            item["summary"] = extra
    return json_response({"items": items, "limit": limit, "offset": offset,
                          "next_offset": offset + len(items) if more else None})


async def get_session(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    data = to_dict(session)
    data["summary"] = await summary(ctx.kernel, session)
    return json_response(data)


def _lifecycle(action: str) -> Any:
    method, takes_reason = LIFECYCLE[action]

    async def transition(request: Request) -> Response:
        ctx = context(request)
        session_id = request.path_params["session_id"]
        await visible_session(ctx, session_id)
        fields = frozenset({"reason"}) if takes_reason else frozenset()
        body = body_object(await read_json(request, ctx.state.settings.max_body_bytes, required=False), fields)
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("reason must be a string", path="reason")
        call = getattr(ctx.kernel.sessions, method)
        session = await (call(session_id, reason) if takes_reason else call(session_id))
        return json_response(to_dict(session))

    transition.__name__ = f"session_{action}"
    return transition


async def get_status(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    return json_response(to_dict(await ctx.kernel.runtime.status(session.id)))


async def drain(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    timeout = Query(request).number("timeout", 30.0, minimum=0, maximum=ctx.state.settings.max_await)
    try:
        await ctx.kernel.runtime.drain(session.id, timeout)
    except TimeoutError:
        pass  # the status says what is still going
    return json_response(to_dict(await ctx.kernel.runtime.status(session.id)))


async def get_transcript(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    messages = await ctx.kernel.sessions.transcript(session.id)
    return json_response({"session_id": session.id, "messages": to_dict(messages)})


async def get_cost(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    reporter = cost_reporter_of(ctx.kernel)
    if reporter is not None:
        report = reporter.report(session.id)
        if asyncio.iscoroutine(report):
            report = await report
        return json_response(report)
    return json_response(builtin_cost_report(session.id, await all_runs(ctx.kernel, session.id)))


def routes() -> list[Route]:
    found = [
        Route("/v1/sessions", create_session, methods=["POST"], name="sessions.create"),
        Route("/v1/sessions", get_sessions, methods=["GET"], name="sessions.list"),
        Route("/v1/sessions/{session_id}", get_session, methods=["GET"], name="sessions.get"),
        Route("/v1/sessions/{session_id}/status", get_status, methods=["GET"], name="sessions.status"),
        Route("/v1/sessions/{session_id}/drain", drain, methods=["POST"], name="sessions.drain"),
        Route("/v1/sessions/{session_id}/transcript", get_transcript, methods=["GET"], name="sessions.transcript"),
        Route("/v1/sessions/{session_id}/cost", get_cost, methods=["GET"], name="sessions.cost"),
    ]
    for action in LIFECYCLE:
        found.append(
            Route(f"/v1/sessions/{{session_id}}/{action}", _lifecycle(action), methods=["POST"],
                  name=f"sessions.{action}")
        )
    return found
