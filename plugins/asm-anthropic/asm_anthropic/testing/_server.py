"""The fake Anthropic Messages API: request validation and the wire format of its answers.

Built on :class:`asm_kernel.testing.fake_http.FakeHTTPServer`, which owns the HTTP server, the
scripts and the record of requests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from asm_kernel.testing.fake_http import FakeHTTPServer, JsonResponse, RecordedRequest, Response, SSEEvent, SSEResponse

from ._replies import ErrorReply, Reply, text_block, thinking_block, tool_use_block

__all__ = ["FakeAnthropic", "MESSAGES", "COUNT_TOKENS", "fake_tokens"]

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"


def fake_tokens(body: Any) -> int:
    """The fake's own tokenizer: 4 characters of the request's JSON (messages, system, tools) a token.

    ``count_tokens`` answers it and ``context_limit`` judges by it, so tests see one consistent,
    exact count (the real API counts with Claude's tokenizer).
    """
    if not isinstance(body, dict):
        return 0
    parts = [body.get(k) for k in ("messages", "system", "tools") if body.get(k) is not None]
    return (len(json.dumps(parts, separators=(",", ":"))) + 3) // 4


def _error_body(etype: str, message: str, request_id: str) -> bytes:
    body = {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}
    return json.dumps(body).encode()


class FakeAnthropic(FakeHTTPServer):
    """The fake server. Start it with ``with FakeAnthropic() as fake`` (or :meth:`start`).

    ``api_key``: when set, requests with another key (``x-api-key`` or ``authorization: Bearer``)
    get a 401 like the real API; requests with no key always do. A callable in the queue is
    called with the :class:`~asm_kernel.testing.fake_http.RecordedRequest` and its result
    answered (a :class:`Reply`, an :class:`ErrorReply` or a transport-level response).
    """

    name = "fake-anthropic"

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        #: When set, a ``/v1/messages`` request over this many tokens (:func:`fake_tokens`) gets the
        #: API's real answer: 400 ``invalid_request_error`` "prompt is too long: N tokens > M maximum".
        self.context_limit: int | None = None
        #: When true, every reply reports the request's :func:`fake_tokens` as its ``input_tokens``
        #: (as the real API reports what it counted), whatever the reply's ``usage`` says.
        self.report_input_tokens = False

    # -- scripting ----------------------------------------------------------------------------

    def push(self, *replies: Any) -> FakeAnthropic:
        """Queue replies; each request consumes the next one."""
        self.script(*replies)
        return self

    def reply(self, content: Sequence[dict[str, Any]] | str = (), **options: Any) -> Reply:
        """Queue a reply with these blocks (a string is one text block); options as :class:`Reply`."""
        blocks = [text_block(content)] if isinstance(content, str) else list(content)
        reply = Reply(content=blocks, **options)
        self.push(reply)
        return reply

    def reply_text(self, text: str, **options: Any) -> Reply:
        return self.reply([text_block(text)], **options)

    def reply_tool_use(
        self,
        name: str,
        input: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
        raw_json: str | None = None,
        **options: Any,
    ) -> Reply:
        """A tool call (preceded by ``text`` when given); stop reason ``tool_use``."""
        blocks = ([text_block(text)] if text else []) + [tool_use_block(name, input, id=id, raw_json=raw_json)]
        options.setdefault("stop_reason", "tool_use")
        return self.reply(blocks, **options)

    def reply_thinking(self, thinking: str, text: str, *, signature: str = "sig-fake", **options: Any) -> Reply:
        return self.reply([thinking_block(thinking, signature), text_block(text)], **options)

    def reply_context_length(self, prompt_tokens: int = 210_000, limit: int = 200_000) -> ErrorReply:
        """Queue the API's real answer to a prompt over the model's window."""
        return self.reply_error(400, "invalid_request_error",
                                f"prompt is too long: {prompt_tokens} tokens > {limit} maximum")

    def reply_error(
        self,
        status: int,
        type: str = "api_error",
        message: str = "Internal server error",
        headers: Mapping[str, str] | None = None,
        **options: Any,
    ) -> ErrorReply:
        reply = ErrorReply(status, type, message, dict(headers or {}), **options)
        self.push(reply)
        return reply

    # -- the wire format ------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Response:
        def refuse(status: int, etype: str, message: str) -> JsonResponse:
            return JsonResponse(
                status,
                raw_body=_error_body(etype, message, request.request_id),
                headers={"request-id": request.request_id},
            )

        if request.method != "POST" or request.route not in (MESSAGES, COUNT_TOKENS):
            return refuse(404, "not_found_error", f"Not found: {request.method} {request.path}")
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[len("bearer ") :].strip()
        if not key:
            return refuse(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return refuse(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return refuse(400, "invalid_request_error", "anthropic-version header is required")
        if not isinstance(request.body, dict):
            return refuse(400, "invalid_request_error", "The request body is not valid JSON.")
        if request.route == COUNT_TOKENS:
            for required in ("model", "messages"):
                if required not in request.body:
                    return refuse(400, "invalid_request_error", f"{required}: Field required")
            if "max_tokens" in request.body or "stream" in request.body:
                key = "max_tokens" if "max_tokens" in request.body else "stream"
                return refuse(400, "invalid_request_error", f"{key}: Extra inputs are not permitted")
            with self._lock:  # only what was scripted for this route: replies for messages stay queued
                queue = self._scripts.get(COUNT_TOKENS)
                scripted = queue.popleft() if queue else None
            if scripted is not None:
                return self.render(scripted, request)
            return JsonResponse(200, {"input_tokens": fake_tokens(request.body)},
                                headers={"request-id": request.request_id})
        for required in ("model", "max_tokens", "messages"):
            if required not in request.body:
                return refuse(400, "invalid_request_error", f"{required}: Field required")
        if self.context_limit is not None and (tokens := fake_tokens(request.body)) > self.context_limit:
            return refuse(400, "invalid_request_error",
                          f"prompt is too long: {tokens} tokens > {self.context_limit} maximum")
        return super().handle(request)

    def unscripted(self, request: RecordedRequest) -> Response:
        message = "fake Anthropic server: no reply scripted for this request"
        return JsonResponse(
            500,
            raw_body=_error_body("api_error", message, request.request_id),
            headers={"request-id": request.request_id},
        )

    def render(self, item: Any, request: RecordedRequest) -> Response:
        headers = {"request-id": request.request_id}
        if isinstance(item, ErrorReply):
            body = item.body if item.body is not None else _error_body(item.type, item.message, request.request_id)
            return JsonResponse(
                item.status, raw_body=body, headers={**headers, **item.headers}, delay=item.headers_delay
            )
        if not isinstance(item, Reply):
            return super().render(item, request)
        if self.report_input_tokens and request.route == MESSAGES:
            item = dataclasses.replace(item, usage={**item.usage, "input_tokens": fake_tokens(request.body)})
        headers.update(item.headers)
        model = str(request.body.get("model")) if isinstance(request.body, dict) else "claude"
        if not (isinstance(request.body, dict) and request.body.get("stream")):
            return JsonResponse(200, item.message(model), headers, delay=item.headers_delay)
        timing: dict[str, Any] = {"headers": headers, "delay": item.delay, "headers_delay": item.headers_delay}
        if item.raw is not None:
            return SSEResponse([item.raw], **timing)
        events: list[SSEEvent | bytes] = [
            item.replace.get(n) or SSEEvent(data, event=name) for n, (name, data) in enumerate(item.events(model))
        ]
        error = SSEEvent({"type": "error", "error": item.error, "request_id": request.request_id}, event="error")
        return SSEResponse.with_faults(
            events, drop_at=item.drop_at, end_at=item.end_at, error_at=item.error_at, error=lambda n: error, **timing
        )
