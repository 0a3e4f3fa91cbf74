"""What a fake server records of a request, and the transport-level answers it can give."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from attrs import define, field, frozen

__all__ = [
    "RecordedRequest",
    "JsonResponse",
    "SSEEvent",
    "SSEResponse",
    "RawResponse",
    "Stall",
    "Response",
    "RESPONSES",
]


@define(eq=False)
class RecordedRequest:
    """What the fake received, and how the exchange ended.

    ``outcome`` is ``"pending"`` while the answer is written, then ``"completed"``, ``"error"``
    (an HTTP error status was sent), ``"client_closed"`` (the client went away first: a
    cancelled stream) or ``"dropped"`` (the fake cut the connection as scripted, or stopped).
    The outcome is set after the answer's last byte, so wait for ``finished`` (or the fake's
    ``settled()``) before reading it.
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

    @property
    def credentials(self) -> str:
        """What the client authenticated with: a bearer token, decoded basic credentials
        (``user:password``, what a URL's userinfo becomes) or an ``x-api-key``."""
        auth = self.headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            return base64.b64decode(auth[6:]).decode(errors="replace")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return self.headers.get("x-api-key", "")


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

    @classmethod
    def bad_header(cls, text: str) -> RawResponse:
        """A 200 whose headers hold an illegal line with ``text``: the HTTP library fails with
        an error quoting the line, which the SDK chains to its "connection error"."""
        return cls(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nbad header " + text.encode() + b"\r\n\r\n")


@frozen
class Stall:
    """No answer: wait ``seconds`` (None: until the client leaves or the server stops), then
    close the connection."""

    seconds: float | None = None


Response: TypeAlias = JsonResponse | SSEResponse | RawResponse | Stall
RESPONSES = (JsonResponse, SSEResponse, RawResponse, Stall)
