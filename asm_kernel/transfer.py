"""Moving sessions between stores: export as JSON Lines, import idempotently.

An export is a stream of JSON objects, one per line, each with a ``kind``:

* ``{"kind": "asm-export", "version": 1}`` — first line;
* ``{"kind": "session", "session": {...}}`` — a session record, then its log and runs:
* ``{"kind": "event", "event": {...}}`` — every event of that session, in seq order, ids and seqs
  as stored;
* ``{"kind": "run", "run": {...}}`` — every run record of that session (after its events).

Import (``asm import``, :func:`import_lines`) recreates each session with the same ids, seqs and
records on any store. It is idempotent: a session already present gets only the events and runs
it lacks, and an event whose id is stored under another seq is reported as a conflict rather
than stored twice. Each batch is one atomic unit, conditional on the session's last seq, so an
interrupted import resumes where it stopped and never leaves a gap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from attrs import define, evolve, field

from .errors import AlreadyExistsError, NotFoundError, StoreCorruptError, ValidationError
from .model import Event, Run, Session
from .serialization import dumps, from_dict, loads, to_dict
from .writes import WriteUnit

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["EXPORT_VERSION", "export_lines", "import_lines", "ImportReport", "event_from_dict"]

EXPORT_VERSION = 1
_PAGE = 1000
_EVENT_FIELDS = ("id", "session_id", "seq", "type", "payload", "timestamp", "schema_version")
_BATCH = 500


def event_from_dict(data: Any, path: str = "event") -> Event:
    """An event from its exported JSON form; every field is required (``schema_version`` too)."""
    if not isinstance(data, dict):
        raise ValidationError(f"an event must be a JSON object, got {type(data).__name__}", path=path)
    missing = [
        k for k in ("id", "session_id", "seq", "type", "payload", "timestamp", "schema_version") if k not in data
    ]
    if missing:
        raise ValidationError(
            f"the event lacks {', '.join(missing)}",
            path=path,
            hint="exports written by `asm export` have every field; was the file edited?",
        )
    return from_dict(data, Event)


async def export_lines(kernel: Kernel, session_ids: Sequence[str] | None = None) -> AsyncIterator[str]:
    """JSON Lines of the sessions named (all when None), streamed page by page (never loaded whole)."""
    yield dumps({"kind": "asm-export", "version": EXPORT_VERSION})
    async for session in _sessions(kernel, session_ids):
        yield dumps({"kind": "session", "session": to_dict(session)})
        after = 0
        while True:
            events = await kernel.store.read(session.id, after=after, limit=_PAGE)
            for event in events:
                yield dumps({"kind": "event", "event": to_dict(event)})
            if len(events) < _PAGE:
                break
            after = events[-1].seq
        offset = 0
        while True:
            runs = await kernel.store.list_runs(session_id=session.id, limit=_PAGE, offset=offset)
            for run in runs:
                yield dumps({"kind": "run", "run": to_dict(run)})
            if len(runs) < _PAGE:
                break
            offset += len(runs)


async def _sessions(kernel: Kernel, session_ids: Sequence[str] | None) -> AsyncIterator[Session]:
    if session_ids is not None:
        for sid in session_ids:
            yield await kernel.store.get_session(sid)
        return
    offset = 0
    while True:
        page = await kernel.store.list_sessions(limit=_PAGE, offset=offset)
        for session in page:
            yield session
        if len(page) < _PAGE:
            return
        offset += len(page)


@define
class ImportReport:
    sessions: int = 0
    sessions_created: int = 0
    events: int = 0
    events_stored: int = 0
    runs: int = 0
    runs_stored: int = 0
    conflicts: list[str] = field(factory=list)


class _SessionImport:
    """One session's import, written in batches as its lines arrive (never held whole)."""

    def __init__(self, kernel: Kernel, session: Session, report: ImportReport) -> None:
        self.kernel = kernel
        self.session = session
        self.report = report
        self.exists = False
        self.last = 0  # the target's last seq when the import began
        self.expected = 0  # seq the next exported event must have
        self.batch: list[Event] = []

    async def begin(self) -> None:
        try:
            await self.kernel.store.get_session(self.session.id)
        except NotFoundError:
            return
        self.exists = True
        self.last = await self.kernel.store.last_seq(self.session.id)

    async def event(self, event: Event, where: str) -> None:
        self.expected += 1
        if event.seq != self.expected:
            raise StoreCorruptError(
                f"{where}: session {self.session.id} jumps from seq {self.expected - 1} to {event.seq}",
                hint="the export is incomplete or edited; export it again",
            )
        if event.seq <= self.last:
            await self._check_stored(event)
            return
        self.batch.append(event)
        if len(self.batch) >= _BATCH:
            await self._write()

    async def _check_stored(self, event: Event) -> None:
        (stored,) = await self.kernel.store.read(self.session.id, after=event.seq - 1, limit=1)
        if stored.id != event.id:
            self.report.conflicts.append(
                f"seq {event.seq} of session {self.session.id} holds event {stored.id}, not {event.id}"
            )

    async def _write(self) -> None:
        if not self.batch and self.exists:
            return
        first = self.batch[0].seq if self.batch else 1
        unit = WriteUnit(
            self.session.id,
            [evolve(e, seq=0) for e in self.batch],
            new_session=None if self.exists else self.session,
            expected_seq=first - 1,
        )
        committed = await self.kernel.sessions.commit(unit)
        for mine, stored in zip(self.batch, committed.events, strict=True):
            if stored.seq != mine.seq:
                self.report.conflicts.append(f"event {mine.id} of session {self.session.id} has seq {stored.seq}")
            else:
                self.report.events_stored += 1
        if not self.exists:
            self.exists = True
            self.report.sessions_created += 1
        self.batch = []

    async def run(self, run: Run) -> None:
        await self._write()  # a run's record goes in after the events it refers to
        try:
            await self.kernel.sessions.commit(WriteUnit(self.session.id, new_runs=[run]))
        except AlreadyExistsError:
            return
        self.report.runs_stored += 1

    async def finish(self) -> None:
        await self._write()


async def import_lines(kernel: Kernel, lines: Iterable[str]) -> ImportReport:
    """Import an export (see the module docstring); returns what was found and what was stored."""
    report = ImportReport()
    current: _SessionImport | None = None
    for number, line in enumerate(lines, 1):
        where = f"line {number}"
        if not line.strip():
            continue
        try:
            item = loads(line)
        except ValueError as exc:
            raise ValidationError(f"{where} is not JSON: {exc}", path=where) from None
        if not isinstance(item, dict) or "kind" not in item:
            raise ValidationError(
                f"{where} is not an asm export record", path=where, hint="use a file `asm export` wrote"
            )
        kind = item["kind"]
        if number == 1 and kind != "asm-export":
            raise ValidationError("the file does not start with an asm-export header", path=where)
        if kind == "asm-export":
            if item.get("version") != EXPORT_VERSION:
                raise ValidationError(f"export version {item.get('version')!r} is not {EXPORT_VERSION}", path=where)
        elif kind == "session":
            if current is not None:
                await current.finish()
            current = _SessionImport(kernel, from_dict(item.get("session"), Session), report)
            await current.begin()
            report.sessions += 1
        elif kind in ("event", "run"):
            if current is None:
                raise ValidationError(f"{where}: a {kind} before any session", path=where)
            if kind == "event":
                event = event_from_dict(item.get("event"), f"{where}.event")
                if event.session_id != current.session.id:
                    raise ValidationError(f"{where}: the event belongs to another session", path=where)
                report.events += 1
                await current.event(event, where)
            else:
                report.runs += 1
                await current.run(from_dict(item.get("run"), Run))
        else:
            raise ValidationError(f"{where}: unknown record kind {kind!r}", path=where)
    if current is not None:
        await current.finish()
    return report
