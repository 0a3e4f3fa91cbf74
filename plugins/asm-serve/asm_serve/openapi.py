"""The OpenAPI 3.1 document served at ``/v1/openapi.json``, written by hand to match the API.

Hand-written rather than generated because the handlers are plain Starlette functions and the
records are attrs classes: a document derived from either would be vaguer than this one. It is
kept exact by the tests: schemathesis sends generated requests to every operation and checks each
answer against it, and a test checks that every route of the app is described here and back.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from asm_kernel.events import EventType
from asm_kernel.model import RunStatus, SessionStatus
from asm_kernel.options import OPTION_NAMES

from . import __version__
from .routes_sessions import LIFECYCLE, MAX_PAGE

__all__ = ["document", "SCHEMAS"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_TIME = {"type": "string", "format": "date-time"}
_OBJ = {"type": "object"}


def _object(properties: dict[str, Any], required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    schema["required"] = list(properties) if required is None else required
    if not extra:
        schema["additionalProperties"] = False
    return schema


_USAGE = _object({k: {"type": "integer", "minimum": 0} for k in (
    "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "reasoning_tokens")})

SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {"code": _STR, "type": _STR, "message": _STR, "retryable": {"type": "boolean"}, "path": _nullable(_STR),
         "hint": _STR},
        required=["code", "type", "message", "retryable", "path"],
    ),
    "Usage": _USAGE,
    "ContentBlock": _object({"type": _STR}, required=["type"]),
    "Message": _object(
        {"role": {"enum": ["user", "assistant"]}, "content": {"type": "array", "items": _ref("ContentBlock")}},
        required=["role", "content"],
    ),
    "Session": _object({
        "id": _STR, "agent_id": _STR, "status": {"enum": [s.value for s in SessionStatus]}, "metadata": _OBJ,
        "tags": {"type": "array", "items": _STR}, "created_at": _TIME, "updated_at": _TIME}),
    "SessionSummary": _object({
        "last_seq": {"type": "integer", "minimum": 0}, "last_activity": _TIME,
        "runs": {"type": "integer", "minimum": 0},
        "runs_by_status": {"type": "object", "additionalProperties": _INT}, "provider": _nullable(_STR),
        "model": _nullable(_STR), "usage": _ref("Usage"), "cost": _nullable(_NUM),
        "failed_runs": {"type": "integer", "minimum": 0}}),
    "SessionWithSummary": {"allOf": [_ref("Session"), _object({"summary": _ref("SessionSummary")})]},
    "SessionPage": _object({
        "items": {"type": "array", "items": _ref("Session")}, "limit": _INT, "offset": _INT,
        "next_offset": _nullable(_INT)}),
    "Run": _object({
        "id": _STR, "session_id": _STR, "status": {"enum": [s.value for s in RunStatus]},
        "input": _nullable(_ref("Message")), "output": _nullable(_ref("Message")), "usage": _ref("Usage"),
        "cost": _nullable(_NUM), "provider": _nullable(_STR), "model": _nullable(_STR),
        "stop_reason": _nullable(_STR), "error": _nullable(_OBJ), "idempotency_key": _nullable(_STR),
        "metadata": _OBJ, "created_at": _TIME, "started_at": _nullable(_TIME), "finished_at": _nullable(_TIME),
        "owner": _nullable(_STR), "lease_token": _INT, "lease_expires_at": _nullable(_TIME)}),
    "RunPage": _object({
        "items": {"type": "array", "items": _ref("Run")}, "limit": _INT, "offset": _INT,
        "next_offset": _nullable(_INT)}),
    "RunResult": _object({
        "session_id": _STR, "run_id": _STR, "status": {"enum": [s.value for s in RunStatus]}, "output": _STR,
        "message": _nullable(_ref("Message")), "usage": _ref("Usage"), "cost": _nullable(_NUM),
        "provider": _nullable(_STR), "model": _nullable(_STR), "stop_reason": _nullable(_STR),
        "error": _nullable(_OBJ), "pending_tool_calls": {"type": "array", "items": _ref("ContentBlock")}}),
    "RunOutcome": _object({"done": {"type": "boolean"}, "run": _ref("Run"), "result": _nullable(_ref("RunResult"))}),
    "Event": _object({
        "id": _STR, "session_id": _STR, "seq": {"type": "integer", "minimum": 1}, "type": _STR,
        "payload": _OBJ, "run_id": _nullable(_STR), "timestamp": _TIME, "schema_version": _INT}),
    "EventPage": _object({
        "items": {"type": "array", "items": _ref("Event")}, "last_seq": {"type": "integer", "minimum": 0},
        "next_after": _nullable(_INT)}),
    "Transcript": _object({"session_id": _STR, "messages": {"type": "array", "items": _ref("Message")}}),
    "CostReport": _object({"session_id": _STR, "runs": _INT, "usage": _ref("Usage"), "cost": _nullable(_NUM)},
                          required=["session_id", "usage", "cost"]),
    "QueueStatus": _object({
        "session_id": _STR, "running": {"type": "array", "items": _STR}, "queued": {"type": "array", "items": _STR},
        "accepting": {"type": "boolean"}, "draining": {"type": "boolean"}, "max_concurrent_runs": _INT,
        "max_queued_runs": _INT, "subscribers": _INT}),
    "Approvals": _object({"items": {"type": "array", "items": _OBJ}}),
    "Decision": _OBJ,
    "Health": _object({"status": {"const": "ok"}, "instance": _STR, "version": _STR}),
    "Ready": _object({"status": {"const": "ready"}, "instance": _STR}),
    "ServerInfo": _object({
        "version": _STR, "kernel_version": _STR, "instance": _STR,
        "features": {"type": "object", "additionalProperties": {"type": "boolean"}}, "key": _STR,
        "operator": {"type": "boolean"}, "agent_ids": _nullable({"type": "array", "items": _STR})}),
    "NewSession": _object({
        "id": {"type": "string", "minLength": 1},
        "agent_id": {"type": "string", "minLength": 1, "maxLength": 120, "pattern": r"\S"},
        "metadata": _OBJ, "tags": {"type": "array", "items": _STR}}, required=[], extra=False),
    "InputBlock": {"oneOf": [
        _object({"type": {"const": "text"}, "text": _STR}),
        _object({"type": {"const": "image"}, "media_type": _STR, "data": _STR, "url": _STR}, required=["type"]),
        _object({"type": {"const": "tool_result"}, "tool_use_id": _STR,
                 "content": {"anyOf": [_STR, {"type": "array"}]}, "is_error": {"type": "boolean"}},
                required=["type", "tool_use_id"]),
    ]},
    "RunInput": {"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": _ref("InputBlock")},
        _object({"role": {"const": "user"}, "content": {"type": "array", "items": _ref("InputBlock")}}),
    ]},
    "RunOptions": _object({
        "system": _STR, "max_tokens": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_turns": {"type": "integer", "minimum": 1, "maximum": 100},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600}}, required=[], extra=False),
    "NewRun": _object({
        "input": _ref("RunInput"), "provider": _STR, "model": {"type": "string", "minLength": 1},
        "idempotency_key": {"type": "string", "minLength": 1}, "metadata": _OBJ,
        "options": _ref("RunOptions")}, required=["input"], extra=False),
    "StartRun": _object({
        "input": _ref("RunInput"), "session_id": _STR, "provider": _STR, "model": {"type": "string", "minLength": 1},
        "agent_id": {"type": "string", "minLength": 1, "maxLength": 120, "pattern": r"\S"},
        "idempotency_key": {"type": "string", "minLength": 1}, "metadata": _OBJ,
        "options": _ref("RunOptions")}, required=["input"], extra=False),
    "Reason": _object({"reason": _STR}, required=[], extra=False),
}
# The RunOptions schema describes the common options; every name the kernel accepts is listed.
SCHEMAS["RunOptions"]["description"] = "Run options: " + ", ".join(OPTION_NAMES)
SCHEMAS["Event"]["properties"]["type"]["description"] = "One of " + ", ".join(t.value for t in EventType) + \
    ", or a plugin's dotted type"


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "an asm error", **_json(_ref("Error"))} for s in statuses}


_COMMON = (400, 401, 404, 503)


def _op(op_id: str, summary: str, ok: tuple[int, str], *, params: list[Any] | None = None,
        body: str | None = None, body_required: bool = True, errors: tuple[int, ...] = _COMMON,
        secured: bool = True, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    status, schema = ok
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": list(tags),
                          "responses": {str(status): {"description": "ok", **_json(_ref(schema))}, **_errors(*errors)}}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, **_json(_ref(body))}
    if not secured:
        op["security"] = []
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_SID, _RID = _path("session_id"), _path("run_id")
_PAGE = [_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
         _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**62})]


def _paths(max_await: float) -> dict[str, Any]:
    _TIMEOUT = _query("timeout", {"type": "number", "minimum": 0, "maximum": max_await},
                      "seconds to wait (at most serve.max_await)")
    sessions, runs, events, server = ("sessions",), ("runs",), ("events",), ("server",)
    paths: dict[str, Any] = {
        "/v1/health": {"get": _op("health", "liveness", (200, "Health"), errors=(), secured=False, tags=server)},
        "/v1/ready": {"get": _op("ready", "readiness: the store answers and the server accepts requests",
                                 (200, "Ready"), errors=(503,), secured=False, tags=server)},
        "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "this document", "tags": list(server),
                                     "security": [], "responses": {"200": {"description": "OpenAPI 3.1",
                                                                           **_json(_OBJ)}}}},
        "/v1/server": {"get": _op("server", "this server, its features and the caller's key", (200, "ServerInfo"),
                                  errors=(401,), tags=server)},
        "/v1/sessions": {
            "post": _op("createSession", "create a session", (201, "SessionWithSummary"), body="NewSession",
                        body_required=False, errors=(400, 401, 403, 409, 413, 415, 503), tags=sessions),
            "get": _op("listSessions", "sessions, newest first", (200, "SessionPage"), tags=sessions, params=[
                _query("status", {"enum": [s.value for s in SessionStatus]}), _query("agent_id", _STR),
                _query("tag", _STR), *_PAGE,
                _query("summary", {"type": "boolean"}, "add each session's summary (runs, usage, cost)")]),
        },
        "/v1/sessions/{session_id}": {"get": _op("getSession", "one session and its summary",
                                                 (200, "SessionWithSummary"), params=[_SID], tags=sessions)},
        "/v1/sessions/{session_id}/status": {"get": _op("sessionStatus", "the session's run queue in this server",
                                                        (200, "QueueStatus"), params=[_SID], tags=sessions)},
        "/v1/sessions/{session_id}/drain": {"post": _op(
            "drainSession", "finish what is queued and running, then answer the queue", (200, "QueueStatus"),
            params=[_SID, _TIMEOUT], tags=sessions)},
        "/v1/sessions/{session_id}/transcript": {"get": _op("transcript", "the conversation as the model sees it",
                                                            (200, "Transcript"), params=[_SID], tags=sessions)},
        "/v1/sessions/{session_id}/cost": {"get": _op("sessionCost", "usage and cost, in total and by model",
                                                      (200, "CostReport"), params=[_SID], tags=sessions)},
        "/v1/sessions/{session_id}/runs": {
            "post": _op("submitRun", "queue a run in the session", (202, "Run"), params=[_SID], body="NewRun",
                        errors=(400, 401, 404, 409, 413, 415, 429, 503), tags=runs),
            "get": _op("listRuns", "the session's runs, oldest first", (200, "RunPage"), tags=runs,
                       params=[_SID, _query("status", {"enum": [s.value for s in RunStatus]}), *_PAGE]),
        },
        "/v1/sessions/{session_id}/interrupt": {"post": _op(
            "interruptRun", "cancel what is running and run this input next", (202, "Run"), params=[_SID],
            body="NewRun", errors=(400, 401, 404, 409, 413, 415, 429, 503), tags=runs)},
        "/v1/runs": {"post": _op("startRun", "queue a run, in a new session unless session_id is given", (202, "Run"),
                                 body="StartRun", errors=(400, 401, 403, 404, 409, 413, 415, 429, 503), tags=runs)},
        "/v1/runs/{run_id}": {"get": _op("getRun", "one run", (200, "Run"), params=[_RID], tags=runs)},
        "/v1/runs/{run_id}/await": {"get": _op("awaitRun", "wait for the run to end, up to timeout seconds",
                                               (200, "RunOutcome"), params=[_RID, _TIMEOUT], tags=runs)},
        "/v1/runs/{run_id}/cancel": {"post": _op("cancelRun", "cancel a queued or running run", (200, "RunOutcome"),
                                                 params=[_RID], body="Reason", body_required=False,
                                                 errors=(400, 401, 404, 409, 413, 415, 503), tags=runs)},
        "/v1/sessions/{session_id}/approvals": {"get": _op(
            "listApprovals", "tool calls waiting for approval", (200, "Approvals"), params=[_SID],
            errors=(400, 401, 404, 501, 503), tags=runs)},
        "/v1/sessions/{session_id}/events": {"get": _op(
            "listEvents", "a page of the session's event log", (200, "EventPage"), tags=events, params=[
                _SID, _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, "only seq > after"),
                _query("before", {"type": "integer", "minimum": 1, "maximum": 2**62}, "only seq < before"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                _query("types", {"type": "string", "pattern": "^[A-Za-z0-9_.,]+$"}, "comma-separated event types"),
                _query("run_id", {"type": "string", "minLength": 1})])},
        "/v1/sessions/{session_id}/events/stream": {"get": {
            "operationId": "streamEvents", "tags": list(events),
            "summary": "the session's events as Server-Sent Events, replayed after the cursor, then live",
            "parameters": [
                _SID, _query("after", {"type": "integer", "minimum": 0}, "resume after this seq"),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}, "description": "wins over after"},
                _query("types", {"type": "string", "pattern": "^[A-Za-z0-9_.,]+$"}),
                _query("run_id", {"type": "string", "minLength": 1})],
            "responses": {"200": {"description": "id: <seq>, data: the Event as JSON; event: close ends it",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404, 503)}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (operator keys)",
                             "tags": list(server), "responses": {
                                 "200": {"description": "exposition format 0.0.4",
                                         "content": {"text/plain": {"schema": {"type": "string"}}}},
                                 **_errors(401, 403)}}},
    }
    for action, (_, takes_reason) in LIFECYCLE.items():
        paths[f"/v1/sessions/{{session_id}}/{action}"] = {"post": _op(
            f"session{action.title()}", f"{action} the session", (200, "Session"), params=[_SID],
            body="Reason" if takes_reason else None, body_required=False,
            errors=(400, 401, 404, 409, 413, 415, 503), tags=sessions)}
    for verb in ("approve", "deny"):
        paths[f"/v1/runs/{{run_id}}/approvals/{{call_id}}/{verb}"] = {"post": _op(
            f"{verb}ToolCall", f"{verb} a tool call waiting for approval", (200, "Decision"),
            params=[_RID, _path("call_id")], body="Reason", body_required=False,
            errors=(400, 401, 404, 409, 413, 415, 501, 503), tags=runs)}
    return paths


@cache
def document(max_await: float = 300.0) -> dict[str, Any]:
    """The document of a server whose ``serve.max_await`` is ``max_await``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "asm serve", "version": __version__,
                 "description": "Sessions, runs and event logs of an asm kernel. Errors are asm errors as JSON."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": _paths(max_await),
    }
