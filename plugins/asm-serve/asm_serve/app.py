"""The ASGI application: routes, the gate middleware, error handlers, health, metrics, inspector.

:func:`create_app` builds a Starlette app over a :class:`~asm_serve.state.ServeState`; the kernel
it serves is started and stopped by :class:`asm_serve.server.AsmServer` (or by an embedding
application), not by the app, so the app can be mounted anywhere.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from asm_kernel import __version__ as kernel_version
from asm_kernel.errors import AsmError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__, routes_events, routes_runs, routes_sessions
from .errors import (
    MethodNotAllowedError,
    RouteNotFoundError,
    ShuttingDownError,
    as_asm_error,
    error_body,
    status_of,
)
from .http import json_response
from .metrics import render
from .openapi import document
from .state import ServeState
from .views import context

__all__ = ["create_app", "error_response"]

log = logging.getLogger("asm.serve")

#: Routes that answer while the server shuts down (probes must see it go).
_ALWAYS_OPEN = frozenset({"/v1/health", "/v1/ready"})
#: The inspector needs nothing from elsewhere: no CDN, no inline script.
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def error_response(exc: BaseException) -> Response:
    """The JSON answer for ``exc`` (an AsmError, or an internal error that reveals nothing)."""
    error = as_asm_error(exc)
    status = status_of(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="asm"'
    if error.retryable and status in (429, 503):
        headers["Retry-After"] = "1"
    return json_response(error_body(error), status, headers=headers)


class Gate:
    """Outermost middleware: refuses new requests once shutdown began, counts every answer,
    adds security headers."""

    def __init__(self, app: ASGIApp, state: ServeState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.state.accepting and scope["path"] not in _ALWAYS_OPEN:
            response = error_response(ShuttingDownError("the server is shutting down", hint="retry shortly"))
            await response(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "name", None) or getattr(scope.get("endpoint"), "__name__", "other")
            self.state.metrics.request(scope["method"], str(route), status)


async def _asm_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path[:200]}"))
    if exc.status_code == 404:
        return error_response(RouteNotFoundError(f"no route {request.url.path[:200]}", hint="see /v1/openapi.json"))
    error = AsmError(str(exc.detail)[:300])
    error.code = f"http.status_{exc.status_code}"
    error.category = "http"
    response = json_response(error_body(error), exc.status_code)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
    return error_response(exc)


async def health(request: Request) -> Response:
    state: ServeState = request.app.state.asm
    return json_response({"status": "ok", "instance": state.instance, "version": __version__})


async def ready(request: Request) -> Response:
    state: ServeState = request.app.state.asm
    if not state.accepting:
        return error_response(ShuttingDownError("the server is shutting down"))
    await state.kernel.store.list_sessions(limit=1)  # the store answers
    return json_response({"status": "ready", "instance": state.instance})


async def server_info(request: Request) -> Response:
    ctx = context(request)
    return json_response(
        {
            "version": __version__,
            "kernel_version": kernel_version,
            "instance": ctx.state.instance,
            "features": ctx.state.features,
            "key": ctx.principal.name,
            "operator": ctx.principal.operator,
            "agent_ids": sorted(ctx.principal.agent_ids) if ctx.principal.agent_ids is not None else None,
        }
    )


async def metrics(request: Request) -> Response:
    ctx = context(request)
    ctx.principal.require_operator("/metrics")
    return Response(render(ctx.state), media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    state: ServeState = request.app.state.asm
    return json_response(document(state.settings.max_await))


_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
    "inspector.css": "text/css; charset=utf-8",
}


def _static(name: str) -> Any:
    body = resources.files("asm_serve").joinpath("static", name).read_bytes()
    media = _STATIC[name]

    async def serve(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache"}
        if name == "index.html":
            headers["Content-Security-Policy"] = _PAGE_CSP
        return Response(body, media_type=media, headers=headers)

    serve.__name__ = f"static_{name.replace('.', '_')}"
    return serve


def create_app(state: ServeState) -> Starlette:
    """The ASGI app serving ``state.kernel``: API under ``/v1``, ``/metrics``, the inspector at ``/``."""
    routes = [
        Route("/v1/health", health, methods=["GET"], name="health"),
        Route("/v1/ready", ready, methods=["GET"], name="ready"),
        Route("/v1/server", server_info, methods=["GET"], name="server"),
        Route("/v1/openapi.json", openapi, methods=["GET"], name="openapi"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
        Route("/", _static("index.html"), methods=["GET"], name="inspector"),
        Route("/static/inspector.js", _static("inspector.js"), methods=["GET"], name="static.js"),
        Route("/static/inspector.css", _static("inspector.css"), methods=["GET"], name="static.css"),
        *routes_sessions.routes(),
        *routes_runs.routes(),
        *routes_events.routes(),
    ]
    middleware = [Middleware(Gate, state=state)]
    if state.settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(state.settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={AsmError: _asm_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.asm = state
    return app
