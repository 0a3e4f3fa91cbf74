"""The HTTP side: read a request, record it, write the answer the server chose, notice clients leaving."""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ._records import JsonResponse, RawResponse, RecordedRequest, Response, SSEResponse

if TYPE_CHECKING:
    from ._server import FakeHTTPServer

__all__ = ["Server", "Handler"]


class _ClientGone(Exception):
    pass


class _Stopping(Exception):
    pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    fake: FakeHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # connection-level noise of clients that went away
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each event of a stream is its own small write, as a provider's server sends them: with
    # Nagle's algorithm on, every write after the first waited for the client's delayed ACK
    # (about 40 ms a stream here) - no real provider's server does that.
    disable_nagle_algorithm = True
    server: Server
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
