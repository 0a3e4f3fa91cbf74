"""Postgres-specific behaviour of the write path that the conformance suite does not single out."""

from __future__ import annotations

from asm_kernel.model import Event, Session
from asm_kernel.writes import WriteUnit
from pg_helpers import store_for


async def test_events_are_planned_as_new_and_looked_up_only_when_that_fails(pg_schema: str) -> None:
    store = store_for(pg_schema)
    await store.open()
    try:
        s = Session()
        await store.commit(WriteUnit(s.id, new_session=s))
        first = Event(session_id=s.id, type="a")
        assert [e.seq for e in await store.append(s.id, [first])] == [1]
        # A batch mixing a stored event with a new one: the insert meets the stored id, and the
        # unit runs again with a lookup - the stored event keeps its seq, the new one gets 2.
        second = Event(session_id=s.id, type="b")
        got = await store.append(s.id, [first, second])
        assert [(e.id, e.seq) for e in got] == [(first.id, 1), (second.id, 2)]
        # A stale expected_seq on a full replay: the first plan fails, the lookup finds the events.
        assert [e.seq for e in await store.append(s.id, [first, second], expected_seq=0)] == [1, 2]
        assert [e.type for e in await store.read(s.id)] == ["a", "b"]
        assert store.stats.replays == 1
    finally:
        await store.close()
