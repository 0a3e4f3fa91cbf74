"""Event routes: a page of the log, and the live stream (:mod:`.sse`)."""

from __future__ import annotations

from asm_kernel.errors import LimitExceededError, ValidationError
from asm_kernel.serialization import to_dict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import ShuttingDownError
from .http import MAX_INT, Query, json_response
from .routes_sessions import MAX_PAGE
from .sse import EventStream, event_stream
from .views import context, visible_session

__all__ = ["routes"]


async def list_events(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    q = Query(request)
    after = q.integer("after", 0) or 0
    before = q.integer("before", None, minimum=1)
    limit = q.integer("limit", 100, minimum=1, maximum=MAX_PAGE) or 100
    types = q.names("types")
    run_id = q.text("run_id")
    events = await ctx.kernel.sessions.events(
        session.id, after=after, before=before, limit=limit, types=types, run_id=run_id
    )
    last_seq = await ctx.kernel.store.last_seq(session.id)
    return json_response(
        {
            "items": [to_dict(e) for e in events],
            "last_seq": last_seq,
            "next_after": events[-1].seq if len(events) == limit else None,
        }
    )


def _cursor(request: Request) -> int:
    """``Last-Event-ID`` (a reconnecting client's) wins over ``?after=``."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        text = header.strip()
        if not text.isdigit() or int(text) > MAX_INT:
            raise ValidationError("Last-Event-ID must be an event seq (an integer >= 0)", path="Last-Event-ID")
        return int(text)
    return Query(request).integer("after", 0) or 0


async def stream_events(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    after = _cursor(request)
    q = Query(request)
    types = q.names("types")
    run_id = q.text("run_id")
    hubs = ctx.state.hubs
    if hubs.closing or not ctx.state.accepting:
        raise ShuttingDownError("the server is shutting down", hint="reconnect later with Last-Event-ID")
    if hubs.streams >= hubs.max_streams:
        raise LimitExceededError(
            f"this server has {hubs.streams} open event streams (serve.max_streams)",
            hint="retry later, or raise serve.max_streams",
        )
    return EventStream(event_stream(ctx.state, session.id, after, types, run_id), ctx.state, session.id)


def routes() -> list[Route]:
    return [
        Route("/v1/sessions/{session_id}/events", list_events, methods=["GET"], name="events.list"),
        Route("/v1/sessions/{session_id}/events/stream", stream_events, methods=["GET"], name="events.stream"),
    ]
