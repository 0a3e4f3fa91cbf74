"""A fake OpenAI HTTP server on 127.0.0.1 that speaks both streaming wire formats.

Built on :class:`asm_kernel.testing.fake_http.FakeHTTPServer`, which owns the HTTP server, the
scripts and the record of requests; this module validates requests like OpenAI and renders
:class:`~asm_openai.testing.Reply` / :class:`~asm_openai.testing.HttpError` in its formats.
``POST /v1/chat/completions`` streams ``data: {chat.completion.chunk}`` lines ending with
``data: [DONE]`` (plus a usage chunk when the request sets ``stream_options.include_usage``);
``POST /v1/responses`` streams ``event:``/``data:`` pairs from ``response.created`` to
``response.completed`` with ``sequence_number`` on each. Errors use OpenAI's body
``{"error": {"message", "type", "param", "code"}}`` and headers (``x-request-id``,
``retry-after``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from asm_kernel.testing.fake_http import (
    FakeHTTPServer,
    JsonResponse,
    RecordedRequest,
    Response,
    SSEEvent,
    SSEResponse,
)

from ._chat import error_object, render_chat
from ._replies import HttpError, OutputItem, Reply, Text, ToolCall, new_id
from ._responses import render_responses

__all__ = ["FakeOpenAI", "fake_tokens"]

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"

_DEFAULT_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


def fake_tokens(body: Any) -> int:
    """The fake's own tokenizer: 4 characters of the request's JSON (messages or input, instructions,
    tools) a token; ``context_limit`` judges requests by it."""
    if not isinstance(body, dict):
        return 0
    parts = [body.get(k) for k in ("messages", "input", "instructions", "tools") if body.get(k) is not None]
    return (len(json.dumps(parts, separators=(",", ":"))) + 3) // 4


def _context_error(route: str, tokens: int, limit: int) -> JsonResponse:
    """OpenAI's real answer to a prompt over the model's window, per endpoint."""
    if route == RESPONSES:
        return _error(400, "Your input exceeds the context window of this model. Please adjust your input and try "
                      "again.", "invalid_request_error", "context_length_exceeded")
    return _error(400, f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
                  f"{tokens} tokens. Please reduce the length of the messages.", "invalid_request_error",
                  "context_length_exceeded")


def _error(status: int, message: str, type_: str | None, code: str | None = None, **headers: str) -> JsonResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JsonResponse(status, body, {"x-request-id": f"req_{new_id(32)}", "openai-processing-ms": "7", **headers})


class FakeOpenAI(FakeHTTPServer):
    """The server. Use as a context manager (or ``start()``/``stop()``).

    ``url`` is ``http://127.0.0.1:<port>``; point the SDK (or asm's ``base_url``) at
    ``base_url`` (``url + "/v1"``). Script replies with :meth:`enqueue` (first in, first out,
    for either endpoint; ``route=`` for one); when none is queued, :attr:`default` answers.
    :attr:`requests` records what arrived. ``api_key``, when set, is required as
    ``Authorization: Bearer <key>`` (else 401). A callable in the queue is called with the
    :class:`~asm_kernel.testing.fake_http.RecordedRequest` and its result answered.
    """

    name = "fake-openai"

    def __init__(self, *, api_key: str | None = None, default: Reply | HttpError | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.default = default or Reply()
        #: When set, a request over this many tokens (:func:`fake_tokens`) gets OpenAI's real
        #: 400 ``context_length_exceeded`` answer for its endpoint.
        self.context_limit: int | None = None
        #: When true, every reply reports the request's :func:`fake_tokens` as its input tokens.
        self.report_input_tokens = False

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def last_request(self) -> RecordedRequest:
        return self.last

    def new_request_id(self) -> str:
        return f"req_{new_id(32)}"

    # -- scripting ------------------------------------------------------------------------------

    def enqueue(self, *replies: Any, route: str | None = None) -> FakeOpenAI:
        """Queue replies (:class:`Reply`, :class:`HttpError`, a transport response or a callable)."""
        self.script(*replies, route=route)
        return self

    def reply_text(self, text: str, **kwargs: Any) -> FakeOpenAI:
        return self.enqueue(Reply([Text(text)], **kwargs))

    def reply_tool_call(
        self,
        name: str,
        arguments: str | dict[str, Any],
        *,
        call_id: str | None = None,
        text: str | None = None,
        **kwargs: Any,
    ) -> FakeOpenAI:
        output: list[OutputItem] = [Text(text)] if text else []
        output.append(ToolCall(name, arguments, call_id=call_id))
        return self.enqueue(Reply(output, **kwargs))

    def reply_context_length(self, tokens: int = 130_000, limit: int = 128_000, *, route: str = CHAT) -> FakeOpenAI:
        """Queue OpenAI's real answer to a prompt over the model's window (of ``route``'s endpoint)."""
        return self.enqueue(lambda request: _context_error(request.route, tokens, limit))

    def reply_error(
        self,
        status: int,
        message: str = "error",
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeOpenAI:
        kind = type or _DEFAULT_TYPES.get(status, "api_error")
        return self.enqueue(HttpError(status, message, kind, code, headers=dict(headers or {})))

    # -- the wire format --------------------------------------------------------------------------

    def render_chat(self, reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
        """The (event, data) pairs of a chat stream, before faults are applied."""
        return render_chat(reply, body)

    def render_responses(self, reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
        """The (event, data) pairs of a Responses stream, before faults are applied."""
        return render_responses(reply, body)

    def error_event(self, path: str, reply: Reply, sequence: int) -> tuple[str | None, str]:
        """The in-stream error of ``reply`` in the format of the endpoint at ``path``."""
        err = error_object(reply.error)
        if path.endswith(CHAT):
            return (None, json.dumps({"error": err}))
        data = {"type": "error", "code": err["code"], "message": err["message"], "param": err["param"]}
        return ("error", json.dumps({**data, "sequence_number": sequence}))

    def _error_sse(self, path: str, reply: Reply, sequence: int) -> SSEEvent:
        name, data = self.error_event(path, reply, sequence)
        return SSEEvent(data, event=name)

    def handle(self, request: RecordedRequest) -> Response:
        route = request.route
        if request.method == "GET":
            if route == "/v1/models":
                models = [{"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "fake"}]
                return JsonResponse(200, {"object": "list", "data": models})
            return _error(404, f"Invalid URL (GET {request.path})", "invalid_request_error")
        if route not in (CHAT, RESPONSES):
            return _error(404, f"Invalid URL (POST {request.path})", "invalid_request_error")
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(
                401,
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if not isinstance(request.body, dict):
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        if not request.body.get("stream"):
            return _error(
                400, "The fake OpenAI server only answers streaming requests (stream: true).", "invalid_request_error"
            )
        if self.context_limit is not None and (tokens := fake_tokens(request.body)) > self.context_limit:
            return _context_error(route, tokens, self.context_limit)
        return super().handle(request)

    def render(self, item: Any, request: RecordedRequest) -> Response:
        if isinstance(item, HttpError):
            return self._http_error(item)
        if isinstance(item, Reply):
            return self._stream(item, request)
        return super().render(item, request)

    def _http_error(self, error: HttpError) -> JsonResponse:
        headers = {"x-request-id": f"req_{new_id(32)}", "openai-processing-ms": "7", **error.headers}
        if error.body is not None:
            return JsonResponse(error.status, headers=headers, raw_body=error.body.encode())
        body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
        return JsonResponse(error.status, body, headers)

    def _stream(self, reply: Reply, request: RecordedRequest) -> SSEResponse:
        headers = {"x-request-id": f"req_{new_id(32)}", "openai-processing-ms": "12", **reply.headers}
        timing: dict[str, Any] = {"delay": reply.delay, "headers_delay": reply.first_byte_delay, "headers": headers}
        if reply.pause_after is not None:
            timing["pauses"] = {reply.pause_after: reply.pause}
        if reply.raw is not None:
            return SSEResponse([piece.encode() for piece in reply.raw], **timing)
        body = request.body if isinstance(request.body, dict) else {}
        if self.report_input_tokens:
            reply = dataclasses.replace(reply, input_tokens=fake_tokens(body))
        pairs = render_chat(reply, body) if request.route == CHAT else render_responses(reply, body)
        events = [SSEEvent(data, event=name) for name, data in pairs]
        return SSEResponse.with_faults(
            events,
            drop_at=reply.drop_after,
            end_at=reply.end_after,
            error_at=reply.error_after,
            error=lambda at: self._error_sse(request.route, reply, at),
            **timing,
        )
