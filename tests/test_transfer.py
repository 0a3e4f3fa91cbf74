"""Export and import: sessions move between stores with ids, seqs and runs, idempotently."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asm_kernel import Kernel, ToolSpec
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.builtin.scripted import ScriptedProvider
from asm_kernel.errors import ValidationError
from asm_kernel.testing import assert_record_and_log_agree
from asm_kernel.transfer import event_from_dict, export_lines, import_lines


class Lookup:
    spec = ToolSpec("lookup")

    async def __call__(self, input: dict[str, Any]) -> str:
        return "found it"


def kernel(store: MemoryStore) -> Kernel:
    provider = ScriptedProvider(
        [[{"text": "looking"}, {"tool_use": {"name": "lookup", "input": {"q": 1}}}], [{"text": "here it is"}]],
        settings=None,
    )
    return Kernel({"plugins": {"autoload": False}}, store=store, providers={"s": provider}, tools=[Lookup()])


async def source_with_history() -> tuple[MemoryStore, list[str]]:
    store = MemoryStore()
    async with kernel(store) as k:
        ids = []
        for agent in ("a", "b"):
            s = await k.sessions.create(agent_id=agent, tags=["exported"])
            await k.sessions.run(s.id, "first question")
            await k.sessions.run(s.id, "second question")
            ids.append(s.id)
        await k.sessions.complete(ids[1])
    return store, ids


async def lines_of(store: MemoryStore, ids: list[str] | None = None) -> list[str]:
    async with kernel(store) as k:
        return [line async for line in export_lines(k, ids)]


async def test_a_round_trip_keeps_ids_seqs_records_and_transcripts() -> None:
    source, ids = await source_with_history()
    lines = await lines_of(source)
    assert json.loads(lines[0]) == {"kind": "asm-export", "version": 1}
    target = MemoryStore()
    async with kernel(target) as k:
        report = await import_lines(k, lines)
        assert (report.sessions, report.sessions_created, report.conflicts) == (2, 2, [])
        assert report.events == report.events_stored and report.runs == report.runs_stored == 4
        for sid in ids:
            assert await target.get_session(sid) == await source.get_session(sid)
            assert [(e.id, e.seq, e.type, e.payload) for e in await target.read(sid)] == [
                (e.id, e.seq, e.type, e.payload) for e in await source.read(sid)
            ]
            assert await target.list_runs(session_id=sid) == await source.list_runs(session_id=sid)
            await assert_record_and_log_agree(target, sid)
        # The imported session continues where it left off.
        result = await k.sessions.run(ids[0], "third question")
        assert result.status.value == "completed"
        new = await target.read(ids[0], run_id=result.run_id)
        assert new[0].seq == await source.last_seq(ids[0]) + 1
        await assert_record_and_log_agree(target, ids[0])


async def test_import_is_idempotent_and_resumes_an_interrupted_import() -> None:
    source, ids = await source_with_history()
    lines = await lines_of(source)
    target = MemoryStore()
    async with kernel(target) as k:
        partial = await import_lines(k, lines[: len(lines) // 2])  # the import was interrupted here
        assert partial.sessions >= 1
        again = await import_lines(k, lines)
        assert again.conflicts == []
        twice = await import_lines(k, lines)
        assert (twice.events_stored, twice.runs_stored, twice.sessions_created, twice.conflicts) == (0, 0, 0, [])
        for sid in ids:
            assert [e.id for e in await target.read(sid)] == [e.id for e in await source.read(sid)]
            await assert_record_and_log_agree(target, sid)


async def test_a_target_with_other_events_at_those_seqs_is_reported_not_overwritten() -> None:
    source, ids = await source_with_history()
    lines = await lines_of(source, ids[:1])
    target = MemoryStore()
    async with kernel(target) as k:
        await k.sessions.create(session_id=ids[0])  # a different session_created at seq 1
        report = await import_lines(k, lines)
    assert report.conflicts and "seq 1" in report.conflicts[0]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        json.dumps({"kind": "session", "session": {}}),  # no header first
        json.dumps(["a list"]),
    ],
)
async def test_bad_input_is_a_typed_error_naming_the_line(bad: str) -> None:
    async with kernel(MemoryStore()) as k:
        with pytest.raises(ValidationError) as info:
            await import_lines(k, [bad])
    assert info.value.path == "line 1"


async def test_an_event_without_its_schema_version_is_refused() -> None:
    source, ids = await source_with_history()
    lines = await lines_of(source, ids[:1])
    event = json.loads(lines[2])["event"]
    del event["schema_version"]
    with pytest.raises(ValidationError, match="schema_version"):
        event_from_dict(event)
    broken = [*lines[:2], json.dumps({"kind": "event", "event": event}), *lines[3:]]
    async with kernel(MemoryStore()) as k:
        with pytest.raises(ValidationError) as info:
            await import_lines(k, broken)
    assert info.value.path == "line 3.event"
