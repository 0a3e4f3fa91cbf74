"""The common base of wire-faithful fake provider servers: real HTTP on 127.0.0.1.

A provider plugin's fake server (``asm_openai.testing.FakeOpenAI``,
``asm_anthropic.testing.FakeAnthropic``) subclasses :class:`FakeHTTPServer` and keeps only its
wire format: it turns its own scripted replies into the transport-level responses defined
here. Everything else is shared: a threaded server on a free port, a FIFO script of responses
per route, a record of every request, and the faults tests need::

    with MyFake() as fake:                       # a started server; stopped on exit
        fake.script(JsonResponse(200, {"ok": True}), route="/v1/things")
        fake.script(SSEResponse([SSEEvent({"n": 1}), SSEEvent({"n": 2})], end="drop"))
        fake.script(lambda request: JsonResponse(401, {"echo": request.headers["authorization"]}))
        ...                                      # point the SDK at fake.url
        assert fake.last.body == {...}

Responses: :class:`JsonResponse` (status, headers, JSON or raw body), :class:`SSEResponse`
(server-sent events with delays and pauses, ending cleanly, dropping the connection or hanging),
:class:`RawResponse` (bytes written verbatim: a malformed status line or header), :class:`Stall`
(no answer at all). A callable in the script is called with the :class:`RecordedRequest` and
its result is answered: that is how a fake reflects what it received.

Standard library and attrs only; nothing here needs pytest.
"""

from __future__ import annotations

import collections
import itertools
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, TypeAlias

from attrs import define, field, frozen

__all__ = [
    "FakeHTTPServer",
    "RecordedRequest",
    "JsonResponse",
    "SSEEvent",
    "SSEResponse",
    "RawResponse",
    "Stall",
    "Response",
]


@define(eq=False)
class RecordedRequest:
    """What the fake received, and how the exchange ended.

    ``outcome`` is ``"pending"`` while the answer is written, then ``"completed"``, ``"error"``
    (an HTTP error status was sent), ``"client_closed"`` (the client went away first: a
    cancelled stream) or ``"dropped"`` (the fake cut the connection as scripted, or stopped).
    ``body`` is the parsed JSON body, None when there is none or it is not JSON.
    """

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    request_id: str
    outcome: str = "pending"
    finished: threading.Event = field(factory=threading.Event, repr=False)

    @property
    def route(self) -> str:
        """The path without query string or trailing slash: what scripts are keyed by."""
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    @property
    def json(self) -> Any:
        return self.body


@frozen
class JsonResponse:
    """A complete JSON answer (``raw_body`` replaces the encoded ``body`` when set)."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(factory=dict)
    raw_body: bytes | None = None
    #: seconds before the status line is sent
    delay: float = 0.0


@frozen
class SSEEvent:
    """One server-sent event; ``data`` that is not a string is sent as compact JSON."""

    data: Any
    event: str | None = None

    def encode(self) -> bytes:
        payload = self.data if isinstance(self.data, str) else json.dumps(self.data, separators=(",", ":"))
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {payload}\n\n".encode()


@frozen
class SSEResponse:
    """A ``text/event-stream`` answer, one HTTP chunk per event (``bytes`` are sent verbatim).

    ``end``: ``"complete"`` ends the chunked body cleanly after the events (a truncated stream if
    the script stopped early); ``"drop"`` closes the connection without ending the body;
    ``"hang"`` keeps it open, sending nothing, until the client leaves or the server stops.
    """

    events: Sequence[SSEEvent | bytes]
    status: int = 200
    headers: Mapping[str, str] = field(factory=dict)
    #: seconds before each event but the first
    delay: float = 0.0
    #: seconds before the status line
    headers_delay: float = 0.0
    #: extra seconds before event N
    pauses: Mapping[int, float] = field(factory=dict)
    end: Literal["complete", "drop", "hang"] = "complete"

    @classmethod
    def with_faults(
        cls,
        events: Sequence[SSEEvent | bytes],
        *,
        drop_at: int | None = None,
        end_at: int | None = None,
        error_at: int | None = None,
        error: Callable[[int], SSEEvent | bytes] | None = None,
        **options: Any,
    ) -> SSEResponse:
        """``events`` cut by the earliest scripted fault, counted in events sent before it:
        ``drop_at`` drops the connection, ``end_at`` ends the body cleanly (a truncated stream),
        ``error_at`` sends ``error(n)`` (the wire format's error event) and ends. At the same
        event a drop wins over a clean end, which wins over an error."""
        faults = [(n, rank) for rank, n in enumerate((drop_at, end_at, error_at)) if n is not None]
        at, rank = min(faults, default=(len(events), -1))
        if at >= len(events):
            return cls(events, **options)
        if rank == 0:
            return cls(events[:at], end="drop", **options)
        if rank == 2 and error is not None:
            return cls([*events[:at], error(at)], **options)
        return cls(events[:at], **options)


@frozen
class RawResponse:
    """Bytes written verbatim (status line, headers, body), then the connection is closed."""

    data: bytes
    delay: float = 0.0


@frozen
class Stall:
    """No answer: wait ``seconds`` (None: until the client leaves or the server stops), then
    close the connection."""

    seconds: float | None = None


Response: TypeAlias = JsonResponse | SSEResponse | RawResponse | Stall
_RESPONSES = (JsonResponse, SSEResponse, RawResponse, Stall)


class _ClientGone(Exception):
    pass


class _Stopping(Exception):
    pass


class FakeHTTPServer:
    """A scripted HTTP server on ``host`` (127.0.0.1) and a free port, in a background thread.

    Subclasses speak a wire format by overriding :meth:`handle` (validate the request like the
    real API, then answer ``self.render(self.next_item(request.route), request)``) and
    :meth:`render` (turn their own reply objects into a :data:`Response`).
    """

    #: the thread's name, for debugging
    name = "fake-http"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        #: answers a request when nothing is scripted for it
        self.default: Any = None
        self.requests: list[RecordedRequest] = []
        #: requests whose client went away before the answer was complete
        self.disconnects = 0
        #: event streams written to their end
        self.completed_streams = 0
        self._host, self._port = host, port
        self._scripts: dict[str | None, collections.deque[Any]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Any:
        """Start serving (idempotent); returns the server."""
        if self._server is None:
            self._stopping.clear()
            server = _Server((self._host, self._port), _Handler)
            server.fake = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; streams still being written are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError(f"the {self.name} server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *items: Any, route: str | None = None) -> Any:
        """Queue answers for ``route`` (a path such as ``/v1/messages``), or for any route."""
        with self._lock:
            self._scripts[route].extend(items)
        return self

    def next_item(self, route: str) -> Any:
        """The next answer for ``route``: its own script first, then the shared one, then
        :attr:`default` (None when there is none)."""
        with self._lock:
            for key in (route, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
            return self.default

    @property
    def pending(self) -> int:
        """Answers still queued."""
        with self._lock:
            return sum(len(q) for q in self._scripts.values())

    def reset(self) -> None:
        """Forget queued answers and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self.requests.clear()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def last(self) -> RecordedRequest:
        """The most recent request."""
        with self._lock:
            if not self.requests:
                raise AssertionError(f"the {self.name} server received no request")
            return self.requests[-1]

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def __iter__(self) -> Iterator[RecordedRequest]:
        with self._lock:
            return iter(list(self.requests))

    def wait_for(self, predicate: Callable[[Any], object], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` is true (``lambda f: f.disconnects``); False on timeout."""
        with self._changed:
            return bool(self._changed.wait_for(lambda: predicate(self), timeout=timeout))

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``n`` requests have arrived (AssertionError after ``timeout``)."""
        if not self.wait_for(lambda f: len(f.requests) >= n, timeout):
            raise AssertionError(f"expected {n} requests, got {len(self.requests)} within {timeout} s")
        with self._lock:
            return list(self.requests)

    # -- what subclasses override ---------------------------------------------------------------

    def new_request_id(self) -> str:
        """The id of a new request (put it in the header the real API uses)."""
        return f"req_fake{next(self._ids):06d}"

    def handle(self, request: RecordedRequest) -> Response:
        """The answer to ``request``: by default the next scripted item for its route."""
        item = self.next_item(request.route)
        if item is None:
            return self.unscripted(request)
        return self.render(item, request)

    def render(self, item: Any, request: RecordedRequest) -> Response:
        """A scripted ``item`` as a transport response; subclasses add their reply types."""
        if isinstance(item, _RESPONSES):
            return item
        if callable(item):
            return self.render(item(request), request)
        raise TypeError(f"{type(self).__name__} cannot answer with {type(item).__name__}")

    def unscripted(self, request: RecordedRequest) -> Response:
        """The answer when nothing is scripted and there is no default."""
        return JsonResponse(500, {"error": f"{self.name}: nothing scripted for {request.method} {request.path}"})

    # -- internals ------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def _finish(self, request: RecordedRequest, outcome: str, *, stream: bool = False) -> None:
        with self._changed:
            if request.outcome == "pending":
                request.outcome = outcome
            if outcome == "client_closed":
                self.disconnects += 1
            elif stream and outcome == "completed":
                self.completed_streams += 1
            request.finished.set()
            self._changed.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # connection-level noise of clients that went away
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _answered = False

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, _ClientGone, _Stopping):
            pass  # the client went away between requests: normal for keep-alive

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RecordedRequest(self.command, self.path, headers, raw, body, fake.new_request_id())
        fake._record(request)
        self._answered = False
        outcome, stream = "completed", False
        try:
            response = fake.handle(request)
            stream = isinstance(response, SSEResponse)
            outcome = self._send(response)
        except _ClientGone:
            outcome = "client_closed"
            self.close_connection = True
        except _Stopping:
            outcome = "dropped"
            self._abort()
        except Exception as exc:  # a bug in a subclass: answer it instead of hanging the client
            outcome = "error"
            if not self._answered:
                self._send(JsonResponse(500, {"error": f"{fake.name} failed: {type(exc).__name__}: {exc}"}))
            raise
        finally:
            fake._finish(request, outcome, stream=stream)

    # -- writing ------------------------------------------------------------------------------

    def _send(self, response: Response) -> str:
        if isinstance(response, JsonResponse):
            self._wait(response.delay)
            data = response.raw_body if response.raw_body is not None else json.dumps(response.body).encode()
            self._head(
                response.status,
                {"content-type": "application/json", "content-length": str(len(data))},
                response.headers,
            )
            self._write(data)
            return "error" if response.status >= 400 else "completed"
        if isinstance(response, SSEResponse):
            return self._stream(response)
        if isinstance(response, RawResponse):
            self._wait(response.delay)
            self._answered = True
            self._write(response.data)
            self._abort()
            return "completed"
        self._wait(response.seconds)
        self._abort()
        return "dropped"

    def _head(self, status: int, base: Mapping[str, str], extra: Mapping[str, str]) -> None:
        self._answered = True
        self.send_response(status)
        headers = {**base, **{k.lower(): v for k, v in extra.items()}}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self._flush()

    def _stream(self, response: SSEResponse) -> str:
        self._wait(response.headers_delay)
        base = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
        }
        self._head(response.status, base, response.headers)
        for n, event in enumerate(response.events):
            if n:
                self._wait(response.delay)
            self._wait(response.pauses.get(n, 0.0))
            data = event if isinstance(event, bytes) else event.encode()
            if data:
                self._write(b"%x\r\n%s\r\n" % (len(data), data))
        if response.end == "drop":
            self._abort()
            return "dropped"
        if response.end == "hang":
            self._wait(None)
        self._write(b"0\r\n\r\n")
        return "completed"

    def _write(self, data: bytes) -> None:
        if self.server.fake._stopping.is_set():
            raise _Stopping()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise _ClientGone(str(exc)) from None

    def _flush(self) -> None:
        try:
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            raise _ClientGone(str(exc)) from None

    def _wait(self, seconds: float | None) -> None:
        """Sleep ``seconds`` (None: for ever), noticing a client that closes the connection
        and a server that stops meanwhile."""
        if seconds is not None and seconds <= 0:
            return
        end = None if seconds is None else time.monotonic() + seconds
        while True:
            left = 0.05 if end is None else min(end - time.monotonic(), 0.05)
            if left <= 0:
                return
            if self.server.fake._stopping.is_set():
                raise _Stopping()
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise _ClientGone("reset") from None
                if not peek:
                    raise _ClientGone("closed")
                self.server.fake._stopping.wait(left)  # the client sent data: not a close

    def _abort(self) -> None:
        """End the connection mid-answer; data already written still reaches the client."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
