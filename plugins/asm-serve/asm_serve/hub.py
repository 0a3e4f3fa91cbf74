"""Fan-out of a session's events to its SSE streams, with a bounded buffer per stream.

One :class:`SessionHub` per followed session reads the log once, through
``kernel.runtime.subscribe(after=...)``, encodes each event once and offers the bytes to every
stream of that session: 500 browsers watching one session cost one store read per append, not 500.

**No gap, no duplicate.** The hub dispatches events in seq order and moves its ``cursor`` as it
does, without awaiting in between, so a stream that joins while the hub is suspended is offered
exactly the events after ``cursor``. The stream itself replays ``(after, cursor]`` from the store
in pages, then the live events, skipping any seq it has already sent. A client that reconnects
with ``Last-Event-ID: n`` therefore gets ``n+1, n+2, ...``.

**Back-pressure.** Each stream buffers at most ``serve.sse_buffer`` events. One that falls
further behind (its client reads too slowly) is cut off: its buffer is dropped and it ends with
a ``close`` event (reason ``slow_consumer``) naming the last id it sent, so memory stays bounded
and the client resumes from there. A client that stops reading entirely is cut off by the send
timeout (:mod:`.sse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from asm_kernel.model import Event
from asm_kernel.secrets import redact
from asm_kernel.serialization import dumps, to_dict

from .errors import SlowConsumerError, as_asm_error, error_body

if TYPE_CHECKING:
    from asm_kernel.kernel import Kernel

__all__ = ["Stream", "SessionHub", "Hubs", "encode_event", "encode_close"]

log = logging.getLogger("asm.serve")

#: Events dispatched between two chances for the streams to send what they were offered.
YIELD_EVERY = 32


def encode_event(event: Event) -> bytes:
    """One SSE message: ``id: <seq>`` and the event as JSON (the shape of ``GET .../events``)."""
    return f"id: {event.seq}\r\ndata: {dumps(redact(to_dict(event)))}\r\n\r\n".encode()


def encode_close(reason: str, last_event_id: int, error: dict[str, Any] | None = None) -> bytes:
    """The last message of a stream the server ends: why, and where to resume."""
    data = {"reason": reason, "last_event_id": last_event_id, "error": error}
    return f"event: close\r\ndata: {dumps(data)}\r\n\r\n".encode()


class Stream:
    """One SSE client's place in a hub: its filters, its bounded buffer, how it ended."""

    __slots__ = ("buffer", "capacity", "closed", "peak", "run_id", "types", "wake")

    def __init__(self, types: frozenset[str] | None, run_id: str | None, capacity: int) -> None:
        self.types = types
        self.run_id = run_id
        self.capacity = capacity
        self.buffer: deque[tuple[int, bytes]] = deque()
        self.wake = asyncio.Event()
        #: (reason, error body) once the server ends the stream.
        self.closed: tuple[str, dict[str, Any] | None] | None = None
        self.peak = 0

    def wants(self, event: Event) -> bool:
        return (self.types is None or event.type in self.types) and (self.run_id is None or event.run_id == self.run_id)

    def offer(self, seq: int, data: bytes) -> bool:
        """Buffer one event; False when that overflowed the buffer and ended the stream."""
        if self.closed is not None:
            return True
        if len(self.buffer) >= self.capacity:
            self.buffer.clear()  # dropped: the client resumes from the store with Last-Event-ID
            error = SlowConsumerError(
                f"this stream fell more than {self.capacity} events behind and was cut off",
                hint="reconnect with the Last-Event-ID header (or ?after=) to resume; read faster "
                "or filter with ?types=",
            )
            self.end("slow_consumer", error_body(error))
            return False
        self.buffer.append((seq, data))
        self.peak = max(self.peak, len(self.buffer))
        self.wake.set()
        return True

    def end(self, reason: str, error: dict[str, Any] | None = None) -> None:
        if self.closed is None:
            self.closed = (reason, error)
            self.wake.set()


class SessionHub:
    """Reads one session's log and offers each event to the session's streams."""

    def __init__(self, hubs: Hubs, session_id: str) -> None:
        self._hubs = hubs
        self.session_id = session_id
        #: Seq of the last event dispatched; streams that join get everything after it.
        self.cursor = 0
        self.streams: set[Stream] = set()
        self.ready = asyncio.Event()
        self.failure: dict[str, Any] | None = None
        self._task = asyncio.create_task(self._pump(), name=f"asm-serve-hub-{session_id}")

    async def _pump(self) -> None:
        kernel = self._hubs.kernel
        try:
            self.cursor = await kernel.store.last_seq(self.session_id)
            self.ready.set()
            dispatched = 0
            async for event in kernel.runtime.subscribe(self.session_id, after=self.cursor, poll=self._hubs.poll):
                self.dispatch(event)
                dispatched += 1
                if dispatched % YIELD_EVERY == 0:
                    # A long batch (a burst of appends read at once) must not fill the buffers
                    # of streams that read fine: let them send. The cursor is exact here too.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = as_asm_error(exc)
            if error is not exc:
                log.error("event stream of session %s failed: %s", self.session_id, exc, exc_info=exc)
            self.failure = error_body(error)
            for stream in list(self.streams):
                stream.end("error", self.failure)
            self.ready.set()
            self._hubs._forget(self)

    def dispatch(self, event: Event) -> None:
        data = encode_event(event)
        self.cursor = event.seq
        for stream in tuple(self.streams):
            if stream.wants(event) and not stream.offer(event.seq, data):
                self._hubs.slow_consumers += 1
                log.warning("an event stream of session %s fell behind and was cut off", self.session_id)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def flush_and_end(self, reason: str) -> None:
        """Deliver every event stored so far, then end each stream with ``reason`` (shutdown)."""
        await self.stop()
        kernel = self._hubs.kernel
        try:
            while True:
                page = await kernel.store.read(self.session_id, after=self.cursor, limit=500)
                for event in page:
                    self.dispatch(event)
                if len(page) < 500:
                    break
        except Exception as exc:  # the store is going away too: end the streams anyway
            log.warning("could not flush the event stream of session %s: %s", self.session_id, exc)
        for stream in list(self.streams):
            stream.end(reason)


class Hubs:
    """Every hub of the server; a hub lives while its session has streams."""

    def __init__(self, kernel: Kernel, *, capacity: int, max_streams: int, poll: float = 1.0) -> None:
        self.kernel = kernel
        self.capacity = capacity
        self.max_streams = max_streams
        self.poll = poll
        self._hubs: dict[str, SessionHub] = {}
        self.streams = 0
        self.slow_consumers = 0
        self.events_sent = 0
        self.closing = False

    def __len__(self) -> int:
        return len(self._hubs)

    def peak_buffer(self) -> int:
        return max((s.peak for hub in self._hubs.values() for s in hub.streams), default=0)

    def buffered(self) -> int:
        return sum(len(s.buffer) for hub in self._hubs.values() for s in hub.streams)

    async def join(
        self, session_id: str, types: frozenset[str] | None, run_id: str | None
    ) -> tuple[Stream, int, Callable[[], None]]:
        """A new stream of the session: (stream, the hub's cursor, the function that leaves)."""
        hub = self._hubs.get(session_id)
        if hub is None:
            hub = self._hubs[session_id] = SessionHub(self, session_id)
        await hub.ready.wait()
        stream = Stream(types, run_id, self.capacity)
        if hub.failure is not None:
            stream.end("error", hub.failure)
        hub.streams.add(stream)
        self.streams += 1

        def leave() -> None:
            if stream in hub.streams:
                hub.streams.discard(stream)
                self.streams -= 1
            if not hub.streams and self._hubs.get(session_id) is hub and not self.closing:
                del self._hubs[session_id]
                hub._task.cancel()

        return stream, hub.cursor, leave

    def _forget(self, hub: SessionHub) -> None:
        if self._hubs.get(hub.session_id) is hub:
            del self._hubs[hub.session_id]

    async def close(self, reason: str = "shutdown") -> None:
        """Flush and end every stream (the server is stopping)."""
        self.closing = True
        hubs = list(self._hubs.values())
        await asyncio.gather(*(hub.flush_and_end(reason) for hub in hubs), return_exceptions=True)
        self._hubs.clear()
