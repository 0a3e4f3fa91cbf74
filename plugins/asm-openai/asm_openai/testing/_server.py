"""A fake OpenAI HTTP server on 127.0.0.1 that speaks both streaming wire formats.

Stdlib only (``http.server`` in a background thread). ``POST /v1/chat/completions`` streams
``data: {chat.completion.chunk}`` lines ending with ``data: [DONE]`` (plus a usage chunk when the
request sets ``stream_options.include_usage``); ``POST /v1/responses`` streams ``event:``/``data:``
pairs from ``response.created`` to ``response.completed`` with ``sequence_number`` on each.
Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}`` and headers
(``x-request-id``, ``retry-after``). Tests script each response and inspect what was received.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeOpenAI",
    "Reply",
    "HttpError",
    "Text",
    "ToolCall",
    "Reasoning",
    "Refusal",
    "RecordedRequest",
]


def _pieces(text: str, size: int) -> list[str]:
    size = max(size, 1)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _hex(n: int = 24) -> str:
    return uuid.uuid4().hex[:n]


@dataclass
class Text:
    """Assistant text, streamed ``chunk_size`` characters per delta."""

    text: str
    chunk_size: int = 4


@dataclass
class Refusal:
    """A refusal (``delta.refusal`` in chat, a ``refusal`` content part in Responses)."""

    text: str
    chunk_size: int = 8


@dataclass
class ToolCall:
    """A function call; ``arguments`` (a dict is JSON-encoded) streamed in pieces."""

    name: str
    arguments: str | dict[str, Any] = field(default_factory=dict)
    call_id: str | None = None
    chunk_size: int = 6

    @property
    def raw_arguments(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reasoning:
    """A reasoning item: summary text (Responses) / ``reasoning_content`` deltas (chat).

    ``encrypted_content`` is sent only when the request asked for
    ``include: ["reasoning.encrypted_content"]``, as OpenAI does.
    """

    summary: str = ""
    encrypted_content: str | None = None
    chunk_size: int = 8


OutputItem = Text | Refusal | ToolCall | Reasoning


@dataclass
class Reply:
    """One scripted streaming response.

    * ``status``: ``"completed"``, ``"incomplete"`` (with ``incomplete_reason``) or ``"failed"``
      (with ``error``); for chat, incomplete means ``finish_reason`` ``length`` /
      ``content_filter`` and failed means an ``{"error": ...}`` chunk.
    * ``error_after=N``: after N stream events, send an error event (``error``) and end.
    * ``drop_after=N``: after N events, drop the connection without ending the HTTP body.
    * ``end_after=N``: after N events, end the body cleanly (a truncated stream).
    * ``delay``: seconds between events; ``pause_after``/``pause``: one long pause.
    * ``raw``: send these strings as the body verbatim (malformed streams).
    """

    output: list[OutputItem] = field(default_factory=lambda: [Text("Hello!")])
    input_tokens: int = 12
    output_tokens: int = 8
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    include_usage: bool = True
    status: str = "completed"
    incomplete_reason: str = "max_output_tokens"
    finish_reason: str | None = None
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "type": "server_error",
            "code": "server_error",
            "message": "The server had an error while processing your request.",
        }
    )
    error_after: int | None = None
    drop_after: int | None = None
    end_after: int | None = None
    delay: float = 0.0
    pause_after: int | None = None
    pause: float = 0.0
    first_byte_delay: float = 0.0
    raw: list[str] | None = None
    model: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpError:
    """A non-200 answer with OpenAI's error body (or ``body`` verbatim)."""

    status: int
    message: str = "error"
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes


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


class FakeOpenAI:
    """The server. Use as a context manager (or ``start()``/``stop()``).

    ``url`` is ``http://127.0.0.1:<port>``; point the SDK (or asm's ``base_url``) at
    ``base_url`` (``url + "/v1"``). Script replies with :meth:`enqueue` (first in, first out);
    when none is queued, :attr:`default` answers. :attr:`requests` records what arrived.
    ``api_key``, when set, is required as ``Authorization: Bearer <key>`` (else 401).
    """

    def __init__(self, *, api_key: str | None = None, default: Reply | HttpError | None = None) -> None:
        self.api_key = api_key
        self.default: Reply | HttpError = default or Reply()
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.completed_streams = 0
        self._queue: deque[Reply | HttpError] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake server is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    # -- scripting ----------------------------------------------------------------------------

    def enqueue(self, *replies: Reply | HttpError) -> FakeOpenAI:
        with self._lock:
            self._queue.extend(replies)
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

    def reply_error(
        self,
        status: int,
        message: str = "error",
        *,
        type: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeOpenAI:
        return self.enqueue(
            HttpError(
                status, message, type or _DEFAULT_TYPES.get(status, "api_error"), code, headers=dict(headers or {})
            )
        )

    def _next(self) -> Reply | HttpError:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _note(self, attr: str) -> None:
        with self._changed:
            setattr(self, attr, getattr(self, attr) + 1)
            self._changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` is true (e.g. ``lambda f: f.disconnects``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    @property
    def last_request(self) -> RecordedRequest:
        assert self.requests, "the fake server received no request"
        return self.requests[-1]

    # -- rendering ----------------------------------------------------------------------------

    def render_chat(self, reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
        model = reply.model or str(body.get("model", "gpt-fake"))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and reply.include_usage
        base = {
            "id": f"chatcmpl-{_hex()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }
        events: list[tuple[str | None, str]] = []

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            events.append((None, json.dumps(data)))

        chunk({"role": "assistant", "content": "", "refusal": None})
        calls = 0
        for item in reply.output:
            if isinstance(item, Reasoning):
                for piece in _pieces(item.summary, item.chunk_size):
                    chunk({"reasoning_content": piece})
            elif isinstance(item, Text):
                for piece in _pieces(item.text, item.chunk_size):
                    chunk({"content": piece})
            elif isinstance(item, Refusal):
                for piece in _pieces(item.text, item.chunk_size):
                    chunk({"refusal": piece})
            elif isinstance(item, ToolCall):
                call_id = item.call_id or f"call_{_hex()}"
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": calls,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": item.name, "arguments": ""},
                            }
                        ]
                    }
                )
                for piece in _pieces(item.raw_arguments, item.chunk_size):
                    chunk({"tool_calls": [{"index": calls, "function": {"arguments": piece}}]})
                calls += 1
        if reply.status == "failed":
            events.append((None, json.dumps({"error": _error_object(reply.error)})))
            return events
        finish = reply.finish_reason
        if finish is None:
            if reply.status == "incomplete":
                finish = "length" if reply.incomplete_reason == "max_output_tokens" else "content_filter"
            else:
                finish = "tool_calls" if calls else "stop"
        chunk({}, finish)
        if include_usage:
            usage = {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "total_tokens": reply.input_tokens + reply.output_tokens,
                "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": reply.reasoning_tokens,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }
            events.append((None, json.dumps({**base, "choices": [], "usage": usage})))
        events.append((None, "[DONE]"))
        return events

    def render_responses(self, reply: Reply, body: dict[str, Any]) -> list[tuple[str | None, str]]:
        model = reply.model or str(body.get("model", "gpt-fake"))
        include = body.get("include") or []
        want_encrypted = "reasoning.encrypted_content" in include
        response_id = f"resp_{_hex(32)}"
        created = int(time.time())
        events: list[tuple[str | None, str]] = []

        def emit(kind: str, **data: Any) -> None:
            events.append((kind, json.dumps({"type": kind, "sequence_number": len(events), **data})))

        def response(status: str, output: list[Any], usage: Any = None, **extra: Any) -> dict[str, Any]:
            return {
                "id": response_id,
                "object": "response",
                "created_at": created,
                "status": status,
                "background": False,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": model,
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": None,
                "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
                "store": body.get("store", True),
                "temperature": body.get("temperature", 1.0),
                "text": body.get("text") or {"format": {"type": "text"}},
                "tool_choice": "auto",
                "tools": body.get("tools") or [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage,
                "user": None,
                "metadata": {},
                **extra,
            }

        emit("response.created", response=response("in_progress", []))
        emit("response.in_progress", response=response("in_progress", []))
        done_items: list[dict[str, Any]] = []
        for index, item in enumerate(reply.output):
            if isinstance(item, Reasoning):
                item_id = f"rs_{_hex(32)}"
                added: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
                if want_encrypted:
                    added["encrypted_content"] = None
                emit("response.output_item.added", output_index=index, item=added)
                summary: list[dict[str, Any]] = []
                if item.summary:
                    emit(
                        "response.reasoning_summary_part.added",
                        item_id=item_id,
                        output_index=index,
                        summary_index=0,
                        part={"type": "summary_text", "text": ""},
                    )
                    for piece in _pieces(item.summary, item.chunk_size):
                        emit(
                            "response.reasoning_summary_text.delta",
                            item_id=item_id,
                            output_index=index,
                            summary_index=0,
                            delta=piece,
                        )
                    emit(
                        "response.reasoning_summary_text.done",
                        item_id=item_id,
                        output_index=index,
                        summary_index=0,
                        text=item.summary,
                    )
                    emit(
                        "response.reasoning_summary_part.done",
                        item_id=item_id,
                        output_index=index,
                        summary_index=0,
                        part={"type": "summary_text", "text": item.summary},
                    )
                    summary = [{"type": "summary_text", "text": item.summary}]
                final: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summary}
                if want_encrypted:
                    final["encrypted_content"] = item.encrypted_content or f"gAAAAA{_hex(32)}"
                emit("response.output_item.done", output_index=index, item=final)
                done_items.append(final)
            elif isinstance(item, Text | Refusal):
                item_id = f"msg_{_hex(32)}"
                refusal = isinstance(item, Refusal)
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={
                        "id": item_id,
                        "type": "message",
                        "status": "in_progress",
                        "content": [],
                        "role": "assistant",
                    },
                )
                empty = (
                    {"type": "refusal", "refusal": ""}
                    if refusal
                    else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                )
                full = (
                    {"type": "refusal", "refusal": item.text}
                    if refusal
                    else {"type": "output_text", "text": item.text, "annotations": [], "logprobs": []}
                )
                emit("response.content_part.added", item_id=item_id, output_index=index, content_index=0, part=empty)
                for piece in _pieces(item.text, item.chunk_size):
                    if refusal:
                        emit(
                            "response.refusal.delta", item_id=item_id, output_index=index, content_index=0, delta=piece
                        )
                    else:
                        emit(
                            "response.output_text.delta",
                            item_id=item_id,
                            output_index=index,
                            content_index=0,
                            delta=piece,
                            logprobs=[],
                        )
                if refusal:
                    emit(
                        "response.refusal.done", item_id=item_id, output_index=index, content_index=0, refusal=item.text
                    )
                else:
                    emit(
                        "response.output_text.done",
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        text=item.text,
                        logprobs=[],
                    )
                emit("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=full)
                final = {
                    "id": item_id,
                    "type": "message",
                    "status": "completed",
                    "content": [full],
                    "role": "assistant",
                }
                emit("response.output_item.done", output_index=index, item=final)
                done_items.append(final)
            elif isinstance(item, ToolCall):
                item_id = f"fc_{_hex(32)}"
                call_id = item.call_id or f"call_{_hex()}"
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={
                        "id": item_id,
                        "type": "function_call",
                        "status": "in_progress",
                        "arguments": "",
                        "call_id": call_id,
                        "name": item.name,
                    },
                )
                for piece in _pieces(item.raw_arguments, item.chunk_size):
                    emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=piece)
                emit(
                    "response.function_call_arguments.done",
                    item_id=item_id,
                    output_index=index,
                    name=item.name,
                    arguments=item.raw_arguments,
                )
                final = {
                    "id": item_id,
                    "type": "function_call",
                    "status": "completed",
                    "arguments": item.raw_arguments,
                    "call_id": call_id,
                    "name": item.name,
                }
                emit("response.output_item.done", output_index=index, item=final)
                done_items.append(final)
        usage = {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": reply.cached_tokens},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
            "total_tokens": reply.input_tokens + reply.output_tokens,
        }
        if reply.status == "failed":
            emit(
                "response.failed",
                response=response(
                    "failed",
                    done_items,
                    None,
                    error={"code": reply.error.get("code"), "message": reply.error.get("message")},
                ),
            )
        elif reply.status == "incomplete":
            emit(
                "response.incomplete",
                response=response(
                    "incomplete", done_items, usage, incomplete_details={"reason": reply.incomplete_reason}
                ),
            )
        else:
            emit("response.completed", response=response("completed", done_items, usage))
        return events

    def error_event(self, path: str, reply: Reply, sequence: int) -> tuple[str | None, str]:
        err = _error_object(reply.error)
        if path.endswith("/chat/completions"):
            return (None, json.dumps({"error": err}))
        return (
            "error",
            json.dumps(
                {
                    "type": "error",
                    "code": err["code"],
                    "message": err["message"],
                    "param": err["param"],
                    "sequence_number": sequence,
                }
            ),
        )


def _error_object(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "message": error.get("message", "error"),
        "type": error.get("type"),
        "param": error.get("param"),
        "code": error.get("code"),
    }


class _Dropped(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"
    server_version = "fake-openai/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    # -- plumbing -----------------------------------------------------------------------------

    def _send_json(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: str | None = None
    ) -> None:
        data = (raw if raw is not None else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        headers.setdefault("x-request-id", f"req_{_hex(32)}")
        headers.setdefault("openai-processing-ms", "7")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(
        self,
        status: int,
        message: str,
        type_: str | None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._send_json(status, {"error": {"message": message, "type": type_, "param": param, "code": code}}, headers)

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as exc:
            raise _Dropped() from exc

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.fake._stopping.wait(seconds)

    # -- requests -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(b"")
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(
                200,
                {"object": "list", "data": [{"id": "gpt-fake", "object": "model", "created": 0, "owned_by": "fake"}]},
            )
            return
        self._error(404, f"Invalid URL (GET {self.path})", "invalid_request_error")

    def _record(self, raw: bytes) -> Any:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.fake._record(
            RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                raw=raw,
            )
        )
        return body

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = self._record(raw)
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/v1/responses"):
            self._error(404, f"Invalid URL (POST {self.path})", "invalid_request_error")
            return
        key = self.fake.api_key
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(
                401,
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
            return
        if not isinstance(body, dict):
            self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
            return
        if not body.get("stream"):
            self._error(
                400, "The fake OpenAI server only answers streaming requests (stream: true).", "invalid_request_error"
            )
            return
        reply = self.fake._next()
        if isinstance(reply, HttpError):
            if reply.body is not None:
                self._send_json(reply.status, None, reply.headers, raw=reply.body)
            else:
                self._error(reply.status, reply.message, reply.type, reply.code, reply.param, reply.headers)
            return
        self._stream(path, reply, body)

    def _stream(self, path: str, reply: Reply, body: dict[str, Any]) -> None:
        self._sleep(reply.first_byte_delay)
        if reply.raw is not None:
            events: list[tuple[str | None, str]] = []
        elif path == "/v1/chat/completions":
            events = self.fake.render_chat(reply, body)
        else:
            events = self.fake.render_responses(reply, body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", reply.headers.get("x-request-id", f"req_{_hex(32)}"))
        self.send_header("openai-processing-ms", "12")
        for key, value in reply.headers.items():
            if key.lower() != "x-request-id":
                self.send_header(key, value)
        self.end_headers()
        try:
            if reply.raw is not None:
                for piece in reply.raw:
                    self._sleep(reply.delay)
                    self._chunk(piece.encode())
            else:
                for sent, (name, data) in enumerate(events):
                    if reply.drop_after is not None and sent >= reply.drop_after:
                        self._drop()
                        return
                    if reply.end_after is not None and sent >= reply.end_after:
                        break
                    if reply.error_after is not None and sent >= reply.error_after:
                        ename, edata = self.fake.error_event(path, reply, sent)
                        self._chunk(_sse(ename, edata))
                        break
                    if reply.pause_after is not None and sent == reply.pause_after:
                        self._sleep(reply.pause)
                    if sent:
                        self._sleep(reply.delay)
                    if self.fake._stopping.is_set():
                        self._drop()
                        return
                    self._chunk(_sse(name, data))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.fake._note("completed_streams")
        except (_Dropped, OSError):
            self.close_connection = True
            self.fake._note("disconnects")


def _sse(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()
