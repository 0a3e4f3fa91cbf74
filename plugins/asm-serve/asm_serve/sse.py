"""``GET /v1/sessions/{id}/events/stream``: a session's events as Server-Sent Events.

Each event is one SSE message with ``id: <seq>`` and the event JSON as ``data``. The cursor is
the ``Last-Event-ID`` header (what a browser's EventSource sends when it reconnects) or the
``after`` parameter; the stream replays what is stored after it, then follows live (see
:mod:`.hub` for why there is no gap and no duplicate). Keep-alive comments (``: ping``) are sent
every ``serve.sse_ping`` seconds. The server ends a stream with an ``event: close`` message
whose data says why (``shutdown``, ``slow_consumer``, ``error``) and the last id sent.

Built on sse-starlette's ``EventSourceResponse`` (pings, client-disconnect detection, a
per-send timeout). A client that stops reading makes a send block; after
``serve.sse_send_timeout`` seconds it is cut off, logged in one line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sse_starlette.event import ServerSentEvent
from sse_starlette.sse import EventSourceResponse, SendTimeoutError
from starlette.types import Receive, Scope, Send

from .hub import encode_close, encode_event

if TYPE_CHECKING:
    from .state import ServeState

__all__ = ["EventStream", "event_stream", "REPLAY_PAGE"]

log = logging.getLogger("asm.serve")

#: Events read from the store per replay page: bounded memory however long the log is.
REPLAY_PAGE = 500


class EventStream(EventSourceResponse):
    """EventSourceResponse whose send timeout is a logged cut-off, not an application error."""

    def __init__(self, content: AsyncIterator[bytes], state: ServeState, session_id: str) -> None:
        settings = state.settings
        super().__init__(
            content,
            ping=settings.sse_ping,
            send_timeout=settings.sse_send_timeout,
            ping_message_factory=lambda: ServerSentEvent(comment="ping"),
            headers={"Cache-Control": "no-store"},
        )
        self._state = state
        self._session_id = session_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._state.hubs.slow_consumers += 1
            log.warning(
                "an event stream of session %s was cut off: its client read nothing for %g s",
                self._session_id,
                self._state.settings.sse_send_timeout,
            )
        except OSError:  # the client went away mid-send
            pass


async def event_stream(
    state: ServeState, session_id: str, after: int, types: list[str] | None, run_id: str | None
) -> AsyncIterator[bytes]:
    """The body of one stream: replay from the store, then the hub's live events."""
    hubs = state.hubs
    stream, head, leave = await hubs.join(session_id, frozenset(types) if types else None, run_id)
    last = after
    try:
        # A reconnecting EventSource waits this long (ms) before it tries again.
        yield b"retry: 2000\r\n\r\n"
        while last < head and stream.closed is None:
            page = await state.kernel.sessions.events(
                session_id, after=last, before=head + 1, limit=REPLAY_PAGE, types=types, run_id=run_id
            )
            for event in page:
                yield encode_event(event)
                hubs.events_sent += 1
                last = event.seq
            if len(page) < REPLAY_PAGE:
                break
        while True:
            while stream.buffer:
                seq, data = stream.buffer.popleft()
                if seq <= last:  # replayed already
                    continue
                yield data
                hubs.events_sent += 1
                last = seq
            if stream.closed is not None:
                reason, error = stream.closed
                yield encode_close(reason, last, error)
                return
            stream.wake.clear()
            await stream.wake.wait()
    finally:
        leave()
