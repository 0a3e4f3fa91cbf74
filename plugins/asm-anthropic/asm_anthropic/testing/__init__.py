"""A fake Anthropic Messages API for tests: a real HTTP server on 127.0.0.1.

It speaks the wire format the official SDK expects — ``POST /v1/messages``, server-sent events
(``event: <type>`` / ``data: <json>``) from ``message_start`` to ``message_stop`` with ``ping``,
JSON error bodies ``{"type": "error", "error": {"type": ..., "message": ...}}`` and headers such
as ``request-id`` and ``retry-after`` — so tests drive the real SDK over real HTTP. Tests script
what it answers and read back what it received::

    from asm_anthropic.testing import FakeAnthropic

    with FakeAnthropic() as fake:
        fake.reply_text("Hello!", usage={"input_tokens": 12, "output_tokens": 3})
        fake.reply_error(429, "rate_limit_error", "slow down", headers={"retry-after": "7"})
        ...  # point the provider at fake.url
        assert fake.requests[0].body["messages"][0]["role"] == "user"

Replies are consumed in order, one per request; with the queue empty the server answers with
``default`` if set, else a 500 ``api_error`` naming the problem. With pytest, use the
``fake_anthropic`` fixture from :mod:`asm_anthropic.testing.pytest_plugin`
(``pytest_plugins = ["asm_anthropic.testing.pytest_plugin"]``).

Only the standard library is used; pytest is needed only for the fixture module.
"""

from __future__ import annotations

import collections
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeAnthropic",
    "Reply",
    "ErrorReply",
    "RecordedRequest",
    "text_block",
    "tool_use_block",
    "thinking_block",
    "redacted_thinking_block",
    "sse",
    "fake_anthropic",
]


def __getattr__(name: str) -> Any:
    # ``from asm_anthropic.testing import fake_anthropic`` (the pytest fixture) without making
    # pytest a requirement of the server itself.
    if name == "fake_anthropic":
        from .pytest_plugin import fake_anthropic

        return fake_anthropic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- content helpers (Messages API block shapes) ------------------------------------------------


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: Mapping[str, Any] | None = None, id: str | None = None,
                   raw_json: str | None = None) -> dict[str, Any]:
    """A tool call; ``raw_json`` streams that text as the arguments instead (e.g. invalid JSON)."""
    block: dict[str, Any] = {"type": "tool_use", "id": id or f"toolu_fake{next(_ids):06d}", "name": name,
                             "input": dict(input or {})}
    if raw_json is not None:
        block["_raw_json"] = raw_json
    return block


def thinking_block(thinking: str, signature: str = "sig-fake") -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def redacted_thinking_block(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def sse(event: str, data: Any) -> bytes:
    """One server-sent event as the API writes it."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


_ids = itertools.count(1)


# -- scripted replies ---------------------------------------------------------------------------


@dataclass
class Reply:
    """A successful answer, streamed (or as one JSON message when the request has no ``stream``).

    ``content`` holds Messages API blocks (see :func:`text_block` and friends). ``usage`` holds
    the final counts: ``input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
    ``cache_read_input_tokens``; input and cache counts go in ``message_start``, the output
    count in ``message_delta`` (with all counts when ``full_delta_usage``).

    Faults, by stream event number (0 is ``message_start``; :meth:`events` lists them):
    ``error_at`` sends ``event: error`` with ``error`` in place of event N and ends the stream;
    ``drop_at`` aborts the connection before event N (no end of the chunked body);
    ``end_at`` ends the body cleanly before event N (a truncated stream);
    ``replace`` swaps event N for raw bytes (malformed SSE). ``raw`` replaces the whole body.
    ``delay`` waits between events, ``headers_delay`` before the response starts.
    """

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 10, "output_tokens": 5})
    full_delta_usage: bool = False
    model: str | None = None
    id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk: int = 8
    ping: bool = True
    delay: float = 0.0
    headers_delay: float = 0.0
    error_at: int | None = None
    error: dict[str, Any] = field(default_factory=lambda: {"type": "overloaded_error", "message": "Overloaded"})
    drop_at: int | None = None
    end_at: int | None = None
    replace: dict[int, bytes] = field(default_factory=dict)
    raw: bytes | None = None

    def message(self, model: str) -> dict[str, Any]:
        """The complete message object (the non-streaming response body)."""
        content = [{k: v for k, v in b.items() if not k.startswith("_")} for b in self.content]
        return {
            "id": self.id or "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": self.model or model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self._usage(final=True),
        }

    def _usage(self, final: bool) -> dict[str, int]:
        usage = {
            "input_tokens": int(self.usage.get("input_tokens", 0)),
            "cache_creation_input_tokens": int(self.usage.get("cache_creation_input_tokens", 0)),
            "cache_read_input_tokens": int(self.usage.get("cache_read_input_tokens", 0)),
            "output_tokens": int(self.usage.get("output_tokens", 0)) if final else 1,
        }
        return usage

    def _chunks(self, text: str) -> list[str]:
        size = max(self.chunk, 1)
        return [text[i : i + size] for i in range(0, len(text), size)] or [""]

    def events(self, model: str) -> list[tuple[str, dict[str, Any]]]:
        """The stream, as (event type, data) pairs, before faults are applied."""
        message = self.message(model)
        start = dict(message, content=[], stop_reason=None, stop_sequence=None, usage=self._usage(final=False))
        out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
        for index, block in enumerate(self.content):
            kind = block["type"]

            def delta(d: dict[str, Any], index: int = index) -> tuple[str, dict[str, Any]]:
                return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})

            first: dict[str, Any]
            if kind == "text":
                first = {"type": "text", "text": ""}
                deltas = [delta({"type": "text_delta", "text": c}) for c in self._chunks(block["text"])]
            elif kind == "tool_use":
                first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                raw = block.get("_raw_json")
                args = raw if raw is not None else json.dumps(block.get("input", {}))
                deltas = [delta({"type": "input_json_delta", "partial_json": ""})] + [
                    delta({"type": "input_json_delta", "partial_json": c}) for c in self._chunks(args) if c
                ]
            elif kind == "thinking":
                first = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [delta({"type": "thinking_delta", "thinking": c}) for c in self._chunks(block["thinking"])]
                deltas.append(delta({"type": "signature_delta", "signature": block.get("signature", "")}))
            else:  # redacted_thinking and anything else arrive whole in content_block_start
                first = {k: v for k, v in block.items() if not k.startswith("_")}
                deltas = []
            out.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": first}))
            if index == 0 and self.ping:
                out.append(("ping", {"type": "ping"}))
            out.extend(deltas)
            out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        if not self.content and self.ping:
            out.append(("ping", {"type": "ping"}))
        final = self._usage(final=True)
        delta_usage = final if self.full_delta_usage else {"output_tokens": final["output_tokens"]}
        out.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
            "usage": delta_usage,
        }))
        out.append(("message_stop", {"type": "message_stop"}))
        return out


@dataclass
class ErrorReply:
    """An HTTP error: ``status`` with the API's error body and headers (``retry-after``...)."""

    status: int
    type: str = "api_error"
    message: str = "Internal server error"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # replaces the JSON error body when set
    headers_delay: float = 0.0


@dataclass
class RecordedRequest:
    """What the fake received, and how the exchange ended.

    ``outcome`` is ``"completed"``, ``"error"`` (an HTTP error was sent), ``"client_closed"``
    (the client went away mid-stream), ``"dropped"`` (the fake aborted as scripted), or
    ``"pending"`` while the response is being written.
    """

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    request_id: str
    outcome: str = "pending"
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def json(self) -> Any:
        return self.body


class _ClientGone(Exception):
    pass


def _error_body(etype: str, message: str, request_id: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": etype, "message": message},
                       "request_id": request_id}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, _ClientGone):
            pass  # the client went away between requests: normal for a keep-alive connection

    # -- helpers ------------------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Sleep, noticing a client that closes the connection meanwhile."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.server.fake._stopping.is_set():
                raise _ClientGone("server stopping")
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise _ClientGone("reset") from None
                if not peek:
                    raise _ClientGone("closed")

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise _ClientGone(str(exc)) from None

    def _chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_json(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self._write(body)

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- the endpoint -------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
            bad_json = False
        except ValueError:
            body, bad_json = None, True
        request_id = f"req_fake{next(_ids):06d}"
        record = RecordedRequest(method, self.path, headers, raw, body, request_id)
        fake._record(record)
        try:
            self._respond(fake, record, bad_json)
            if record.outcome == "pending":
                record.outcome = "completed"
        except _ClientGone:
            record.outcome = "client_closed"
            self.close_connection = True
        finally:
            record.finished.set()

    def _respond(self, fake: FakeAnthropic, record: RecordedRequest, bad_json: bool) -> None:
        rid = record.request_id
        base_headers = {"request-id": rid}

        def refuse(status: int, etype: str, message: str) -> None:
            record.outcome = "error"
            self._send_json(status, _error_body(etype, message, rid), base_headers)

        if record.method != "POST" or record.path.split("?")[0] != "/v1/messages":
            return refuse(404, "not_found_error", f"Not found: {record.method} {record.path}")
        key = record.headers.get("x-api-key")
        bearer = record.headers.get("authorization", "")
        if not key and bearer.lower().startswith("bearer "):
            key = bearer[len("bearer ") :].strip()
        if not key:
            return refuse(401, "authentication_error", "x-api-key header is required")
        if fake.api_key is not None and key != fake.api_key:
            return refuse(401, "authentication_error", "invalid x-api-key")
        if not record.headers.get("anthropic-version"):
            return refuse(400, "invalid_request_error", "anthropic-version header is required")
        if bad_json or not isinstance(record.body, dict):
            return refuse(400, "invalid_request_error", "The request body is not valid JSON.")
        for required in ("model", "max_tokens", "messages"):
            if required not in record.body:
                return refuse(400, "invalid_request_error", f"{required}: Field required")

        reply = fake._next_reply()
        if reply is None:
            return refuse(500, "api_error", "fake Anthropic server: no reply scripted for this request")
        if reply.headers_delay:
            self._wait(reply.headers_delay)
        if isinstance(reply, ErrorReply):
            record.outcome = "error"
            body = reply.body if reply.body is not None else _error_body(reply.type, reply.message, rid)
            return self._send_json(reply.status, body, {**base_headers, **reply.headers})
        model = str(record.body.get("model"))
        if not record.body.get("stream"):
            body = json.dumps(reply.message(model)).encode()
            return self._send_json(200, body, {**base_headers, **reply.headers})
        self._stream(reply, model, base_headers, record)

    def _stream(self, reply: Reply, model: str, base_headers: Mapping[str, str], record: RecordedRequest) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for key, value in {**base_headers, **reply.headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.flush()
        if reply.raw is not None:
            self._chunk(reply.raw)
            self._write(b"0\r\n\r\n")
            return
        for n, (name, data) in enumerate(reply.events(model)):
            if n and reply.delay:
                self._wait(reply.delay)
            if reply.drop_at is not None and n >= reply.drop_at:
                record.outcome = "dropped"
                self._abort()
                return
            if reply.end_at is not None and n >= reply.end_at:
                break
            if reply.error_at is not None and n >= reply.error_at:
                self._chunk(sse("error", {"type": "error", "error": reply.error, "request_id": record.request_id}))
                break
            self._chunk(reply.replace[n] if n in reply.replace else sse(name, data))
        self._write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeAnthropic

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return  # connection-level noise
        super().handle_error(request, client_address)


class FakeAnthropic:
    """The fake server. Start it with ``with FakeAnthropic() as fake`` (or :meth:`start`).

    ``api_key``: when set, requests with another key (``x-api-key`` or ``authorization: Bearer``)
    get a 401 like the real API; requests with no key always do.
    """

    def __init__(self, *, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.default: Reply | ErrorReply | None = None
        self.requests: list[RecordedRequest] = []
        self._host, self._port = host, port
        self._replies: collections.deque[Reply | ErrorReply] = collections.deque()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        if self._server is None:
            server = _Server((self._host, self._port), _Handler)
            server.fake = self
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="fake-anthropic", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for the SDK / ``base_url`` setting (the API path is ``/v1/messages``)."""
        if self._server is None:
            raise RuntimeError("the fake Anthropic server is not started")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    # -- scripting ----------------------------------------------------------------------------

    def push(self, *replies: Reply | ErrorReply) -> FakeAnthropic:
        """Queue replies; each request consumes the next one."""
        with self._lock:
            self._replies.extend(replies)
        return self

    def reply(self, content: Sequence[dict[str, Any]] | str = (), **options: Any) -> Reply:
        """Queue a reply with these blocks (a string is one text block); options as :class:`Reply`."""
        blocks = [text_block(content)] if isinstance(content, str) else list(content)
        reply = Reply(content=blocks, **options)
        self.push(reply)
        return reply

    def reply_text(self, text: str, **options: Any) -> Reply:
        return self.reply([text_block(text)], **options)

    def reply_tool_use(self, name: str, input: Mapping[str, Any] | None = None, *, id: str | None = None,
                       text: str | None = None, raw_json: str | None = None, **options: Any) -> Reply:
        """A tool call (preceded by ``text`` when given); stop reason ``tool_use``."""
        blocks = ([text_block(text)] if text else []) + [tool_use_block(name, input, id=id, raw_json=raw_json)]
        options.setdefault("stop_reason", "tool_use")
        return self.reply(blocks, **options)

    def reply_thinking(self, thinking: str, text: str, *, signature: str = "sig-fake", **options: Any) -> Reply:
        return self.reply([thinking_block(thinking, signature), text_block(text)], **options)

    def reply_error(self, status: int, type: str = "api_error", message: str = "Internal server error",
                    headers: Mapping[str, str] | None = None, **options: Any) -> ErrorReply:
        reply = ErrorReply(status, type, message, dict(headers or {}), **options)
        self.push(reply)
        return reply

    def reset(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._lock:
            self._replies.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        """Replies still queued."""
        with self._lock:
            return len(self._replies)

    # -- inspection ---------------------------------------------------------------------------

    @property
    def last(self) -> RecordedRequest:
        with self._lock:
            if not self.requests:
                raise AssertionError("the fake Anthropic server received no request")
            return self.requests[-1]

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``n`` requests have arrived (raises AssertionError after ``timeout``)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= n, timeout=timeout):
                raise AssertionError(f"expected {n} requests, got {len(self.requests)} within {timeout} s")
            return list(self.requests)

    def __iter__(self) -> Iterator[RecordedRequest]:
        return iter(list(self.requests))

    # -- internals ----------------------------------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        with self._arrived:
            self.requests.append(record)
            self._arrived.notify_all()

    def _next_reply(self) -> Reply | ErrorReply | None:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
            return self.default
