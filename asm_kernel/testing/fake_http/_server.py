"""The scripted server: lifecycle, per-route scripts, the record of requests, subclass hooks."""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ._handler import Handler, Server
from ._records import RESPONSES, JsonResponse, RecordedRequest, Response

__all__ = ["FakeHTTPServer"]


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
        # Reentrant: wait_for predicates may use the properties that take it (fake.last, ...).
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Any:
        """Start serving (idempotent); returns the server."""
        if self._server is None:
            self._stopping.clear()
            server = Server((self._host, self._port), Handler)
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

    def settled(self, timeout: float = 5.0) -> list[RecordedRequest]:
        """Every request so far, once each has its final ``outcome`` (AssertionError after ``timeout``).

        The outcome is set after the answer's last byte is written, so a client can read its
        answer before the fake has recorded how the exchange ended: call this before reading
        ``outcome``.
        """
        if not self.wait_for(lambda f: all(r.finished.is_set() for r in f.requests), timeout):
            raise AssertionError(f"{self.name}: requests still being answered after {timeout} s")
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
        if isinstance(item, RESPONSES):
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
