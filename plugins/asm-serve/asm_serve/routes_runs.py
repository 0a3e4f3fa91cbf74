"""Run routes: submit (into the runtime's per-session FIFO queue), get, list, await, cancel,
interrupt, and the approval seam.

A run is submitted with the same fields as ``kernel.runtime.submit_run``: ``input`` (text, a
list of content blocks, or a user message), ``provider``, ``model``, ``idempotency_key``,
``metadata`` and ``options`` (``system``, ``max_tokens``, ``temperature``, ``max_turns``,
``timeout``, ``tools``, ``response_schema``, ``requires``, ``prefers``, ``exclude``), all
validated before anything is stored. The answer is 202 with the stored run; follow it with the
event stream or ``GET /v1/runs/{id}/await``.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from asm_kernel.errors import ValidationError
from asm_kernel.model import ContentBlock, Message, Run, RunStatus
from asm_kernel.options import OPTION_NAMES
from asm_kernel.pipeline.driver import result_of
from asm_kernel.serialization import from_dict, to_dict
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .errors import NotImplementedYetError
from .http import Query, body_object, json_response, read_json
from .routes_sessions import MAX_PAGE, agent_for_new_session
from .seams import approvals_of
from .views import Ctx, context, visible_run, visible_session

__all__ = ["routes", "run_input", "outcome"]

_RUN_FIELDS = frozenset({"input", "provider", "model", "idempotency_key", "metadata", "options"})
_NEW_RUN_FIELDS = _RUN_FIELDS | {"session_id", "agent_id"}


def run_input(value: Any) -> Any:
    """The ``input`` field as what the kernel takes: text, content blocks or a user Message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_block(item, f"input[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return from_dict(value, Message)
    raise ValidationError("input must be text, a list of content blocks or a user message", path="input")


def _block(item: Any, path: str) -> Any:
    """One content block (the union of block types has no class to name in from_dict's errors)."""
    from asm_kernel.serialization import converter
    from cattrs import BaseValidationError

    try:
        return converter().structure(item, cast("type[Any]", ContentBlock))
    except ValidationError as exc:
        raise ValidationError(exc.message, path=path, hint=exc.hint) from None
    except (BaseValidationError, TypeError, ValueError, KeyError, AttributeError):
        raise ValidationError("not a content block", path=path,
                              hint='e.g. {"type": "text", "text": "..."}; see the block types in the docs') from None


def _submit_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    if "input" not in body:
        raise ValidationError("input is required", path="input", hint="the user's message, as text")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ValidationError("options must be an object", path="options")
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:  # checked here: the names also reach submit_run as keywords
        raise ValidationError(f"unknown run option {unknown[0][:60]!r}", path=f"options.{unknown[0][:60]}",
                              hint=f"run options are: {', '.join(OPTION_NAMES)}")
    for name in ("provider", "model", "idempotency_key"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"{name} must be a string", path=name)
    kwargs = {name: body.get(name) for name in ("provider", "model", "idempotency_key", "metadata")}
    return {**kwargs, **{k: v for k, v in options.items() if v is not None}}


async def _submitted(ctx: Ctx, run_id: str) -> Response:
    run = await ctx.kernel.sessions.get_run(run_id)
    return json_response(to_dict(run), 202, headers={"Location": f"/v1/runs/{quote(run.id, safe='')}"})


async def submit(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    body = body_object(await read_json(request, ctx.state.settings.max_body_bytes), _RUN_FIELDS)
    kwargs = _submit_kwargs(body)
    handle = await ctx.kernel.runtime.submit_run(session.id, run_input(body["input"]), **kwargs)
    return await _submitted(ctx, handle.run_id)


async def start(request: Request) -> Response:
    """``POST /v1/runs``: a run in a session, made first when ``session_id`` is not given."""
    ctx = context(request)
    body = body_object(await read_json(request, ctx.state.settings.max_body_bytes), _NEW_RUN_FIELDS)
    kwargs = _submit_kwargs(body)
    message = run_input(body["input"])
    session_id = body.get("session_id")
    if session_id is not None:
        if not isinstance(session_id, str):
            raise ValidationError("session_id must be a string", path="session_id")
        session = await visible_session(ctx, session_id)
    else:
        agent_id = agent_for_new_session(ctx, body.get("agent_id"))
        # Refuse a bad run before its session is made, as kernel.sessions.run_once does.
        ctx.kernel.sessions.new_run("ses_validation", message, **_run_fields(kwargs))
        session = await ctx.kernel.sessions.create(agent_id=agent_id)
    handle = await ctx.kernel.runtime.submit_run(session.id, message, **kwargs)
    return await _submitted(ctx, handle.run_id)


def _run_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    fields = ("provider", "model", "idempotency_key", "metadata")
    return {**{k: kwargs.get(k) for k in fields}, "options": {k: v for k, v in kwargs.items() if k not in fields}}


async def interrupt(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    body = body_object(await read_json(request, ctx.state.settings.max_body_bytes), _RUN_FIELDS)
    kwargs = _submit_kwargs(body)
    handle = await ctx.kernel.runtime.interrupt_run(session.id, run_input(body["input"]), **kwargs)
    return await _submitted(ctx, handle.run_id)


async def list_runs(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    q = Query(request)
    status = q.text("status")
    if status is not None and status not in RunStatus._value2member_map_:
        raise ValidationError(f"unknown run status {status[:40]!r}", path="status",
                              hint=f"use one of {', '.join(s.value for s in RunStatus)}")
    limit = q.integer("limit", 100, minimum=1, maximum=MAX_PAGE) or 100
    offset = q.integer("offset", 0) or 0
    runs = await ctx.kernel.sessions.runs(
        session.id, status=RunStatus(status) if status else None, limit=limit + 1, offset=offset
    )
    more = len(runs) > limit
    return json_response({"items": [to_dict(r) for r in runs[:limit]], "limit": limit, "offset": offset,
                          "next_offset": offset + limit if more else None})


async def get_run(request: Request) -> Response:
    ctx = context(request)
    run, _ = await visible_run(ctx, request.path_params["run_id"])
    return json_response(to_dict(run))


def outcome(run: Run) -> dict[str, Any]:
    """``{"done", "run", "result"}``: the run, and its RunResult once it has ended."""
    done = run.status.terminal
    return {"done": done, "run": to_dict(run), "result": to_dict(result_of(run)) if done else None}


async def await_run(request: Request) -> Response:
    ctx = context(request)
    run, _ = await visible_run(ctx, request.path_params["run_id"])
    timeout = Query(request).number("timeout", 30.0, minimum=0, maximum=ctx.state.settings.max_await)
    if not run.status.terminal:
        try:
            await ctx.kernel.runtime.await_run(run.id, timeout)
        except TimeoutError:
            pass  # not done yet: the answer says so
        run = await ctx.kernel.sessions.get_run(run.id)
    return json_response(outcome(run))


async def cancel(request: Request) -> Response:
    ctx = context(request)
    run, _ = await visible_run(ctx, request.path_params["run_id"])
    body = body_object(await read_json(request, ctx.state.settings.max_body_bytes, required=False),
                       frozenset({"reason"}))
    reason = body.get("reason") or "cancelled"
    if not isinstance(reason, str):
        raise ValidationError("reason must be a string", path="reason")
    await ctx.kernel.runtime.cancel_run(run.id, reason)
    return json_response(outcome(await ctx.kernel.sessions.get_run(run.id)))


def _approvals(ctx: Ctx) -> Any:
    backend = approvals_of(ctx.kernel)
    if backend is None:
        raise NotImplementedYetError(
            "tool-call approvals are not available on this server",
            hint="no installed component provides approvals yet (GET /v1/server lists the features)",
        )
    return backend


async def list_approvals(request: Request) -> Response:
    ctx = context(request)
    session = await visible_session(ctx, request.path_params["session_id"])
    return json_response({"items": await _approvals(ctx).pending(session.id)})


def _decide(approve: bool) -> Any:
    async def decide(request: Request) -> Response:
        ctx = context(request)
        run, _ = await visible_run(ctx, request.path_params["run_id"])
        body = body_object(await read_json(request, ctx.state.settings.max_body_bytes, required=False),
                           frozenset({"reason"}))
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValidationError("reason must be a string", path="reason")
        backend = _approvals(ctx)
        decision = await backend.decide(run.id, request.path_params["call_id"], approve=approve, reason=reason,
                                        actor=ctx.principal.name)
        return json_response(decision)

    decide.__name__ = "approve" if approve else "deny"
    return decide


def routes() -> list[Route]:
    return [
        Route("/v1/runs", start, methods=["POST"], name="runs.start"),
        Route("/v1/sessions/{session_id}/runs", submit, methods=["POST"], name="runs.submit"),
        Route("/v1/sessions/{session_id}/runs", list_runs, methods=["GET"], name="runs.list"),
        Route("/v1/sessions/{session_id}/interrupt", interrupt, methods=["POST"], name="runs.interrupt"),
        Route("/v1/sessions/{session_id}/approvals", list_approvals, methods=["GET"], name="approvals.list"),
        Route("/v1/runs/{run_id}", get_run, methods=["GET"], name="runs.get"),
        Route("/v1/runs/{run_id}/await", await_run, methods=["GET"], name="runs.await"),
        Route("/v1/runs/{run_id}/cancel", cancel, methods=["POST"], name="runs.cancel"),
        Route("/v1/runs/{run_id}/approvals/{call_id}/approve", _decide(True), methods=["POST"],
              name="approvals.approve"),
        Route("/v1/runs/{run_id}/approvals/{call_id}/deny", _decide(False), methods=["POST"], name="approvals.deny"),
    ]
