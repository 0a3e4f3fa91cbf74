"""High-water marks (asm_duckdb.marks): written after commits, checked at open, compacted."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pytest
from asm_kernel.model import Event
from asm_kernel.testing.stores import create_session

from asm_duckdb import marks as marks_mod
from asm_duckdb.marks import marks_path, read_marks
from asm_duckdb.store import DuckDBStore


def _events(session_id: str, n: int) -> list[Event]:
    return [Event(session_id=session_id, type="note", payload={"i": i}) for i in range(n)]


async def _written(path: Path, *counts: int) -> list[str]:
    """A closed store file with one session per count, holding that many events; their ids."""
    store = DuckDBStore(path)
    await store.open()
    ids = []
    for n in counts:
        s = await create_session(store)
        await store.append(s.id, _events(s.id, n))
        ids.append(s.id)
    await store.close()
    return ids


@pytest.mark.parametrize("durability", ["safe", "fast"])
async def test_marks_follow_commits(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "m.duckdb"
    store = DuckDBStore(path, durability=durability)
    await store.open()
    a = await create_session(store)
    b = await create_session(store)
    await store.append(a.id, _events(a.id, 3))
    await store.append(b.id, _events(b.id, 1))
    await store.append(a.id, _events(a.id, 2))
    # Written before the caller was answered: the file already says it (kill -9 keeps it).
    assert read_marks(marks_path(path)) == {a.id: 5, b.id: 1}
    await store.close()
    assert store.lost == {}
    again = DuckDBStore(path)
    await again.open()
    assert again.lost == {} and again.lost_before == []
    await again.close()


async def test_a_missing_marks_file_is_rebuilt_without_a_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.duckdb"
    (sid,) = await _written(path, 4)
    marks_path(path).unlink()  # as a file written by an older asm-duckdb
    caplog.set_level(logging.INFO, logger="asm.duckdb")
    store = DuckDBStore(path)
    await store.open()
    await store.close()
    assert store.lost == {}
    assert read_marks(marks_path(path)) == {sid: 4}
    assert any("rebuilt it" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_stale_marks_file_of_another_database_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database deleted and made again under the same name leaves the old marks behind: they
    describe another file, so nothing is reported lost."""
    path = tmp_path / "again.duckdb"
    await _written(path, 5, 3)
    path.unlink()  # the user removes the database, not its sidecar
    caplog.set_level(logging.INFO, logger="asm.duckdb")
    (sid,) = await _written(path, 2)
    store = DuckDBStore(path)
    await store.open()
    await store.close()
    assert store.lost == {} and store.lost_before == []
    assert read_marks(marks_path(path)) == {sid: 2}
    assert any("belongs to another database" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_marks_without_a_file_id_are_trusted_once_for_an_older_file(tmp_path: Path) -> None:
    """A file from before file ids (and its marks) is checked as before, then given an id."""
    path = tmp_path / "legacy.duckdb"
    a, b = await _written(path, 6, 2)
    with duckdb.connect(str(path)) as conn:
        conn.execute("DELETE FROM asm_meta WHERE key = 'file_id'")
        conn.execute("DELETE FROM events_log WHERE session_id = ? AND seq > 4", [a])
    marks_path(path).write_bytes(f"{a} 6\n{b} 2\n".encode())  # what an older asm-duckdb wrote
    store = DuckDBStore(path)
    await store.open()
    await store.close()
    assert store.lost == {a: 2}
    with duckdb.connect(str(path)) as conn:
        (ident,) = conn.execute("SELECT value FROM asm_meta WHERE key = 'file_id'").fetchone()  # type: ignore[misc]
    assert marks_path(path).read_bytes().startswith(f"#file {ident}\n".encode())
    again = DuckDBStore(path)
    await again.open()
    await again.close()
    assert again.lost == {} and [loss["sessions"] for loss in again.lost_before] == [{a: 2}]


async def test_events_missing_from_the_file_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same check the WAL test makes with a real kill -9, here by deleting committed rows."""
    path = tmp_path / "cut.duckdb"
    store = DuckDBStore(path)
    await store.open()
    a = await create_session(store)
    b = await create_session(store)
    await store.append(a.id, _events(a.id, 10))
    await store.append(b.id, _events(b.id, 2))
    await store.close()
    with duckdb.connect(str(path)) as conn:
        conn.execute("DELETE FROM events_log WHERE session_id = ? AND seq > 7", [a.id])
    caplog.set_level(logging.WARNING, logger="asm.duckdb")

    ro = DuckDBStore(path, read_only=True)  # read-only reports too, and changes nothing
    await ro.open()
    await ro.close()
    assert ro.lost == {a.id: 3}
    assert read_marks(marks_path(path)) == {a.id: 10, b.id: 2}

    store = DuckDBStore(path)
    await store.open()
    assert store.lost == {a.id: 3}
    assert await store.last_seq(a.id) == 7
    appended = await store.append(a.id, _events(a.id, 1))  # the log carries on from what it holds
    assert appended[0].seq == 8
    await store.close()
    assert read_marks(marks_path(path)) == {a.id: 8, b.id: 2}
    assert any(f"{a.id}: 3" in r.getMessage() for r in caplog.records)


async def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    p = tmp_path / "x.marks"
    p.write_bytes(b"a 3\nb 2\na 5\nb 9")  # b's second line was cut mid-write
    assert read_marks(p) == {"a": 5, "b": 2}
    p.write_bytes(b"garbage\nc x\n\xff\xfe 1\nd 4\n")
    assert read_marks(p) == {"d": 4}
    p.write_bytes(b"a 3\nb 4" + bytes(100))  # the zeroed room the file keeps after its lines
    assert read_marks(p) == {"a": 3}


async def test_the_marks_file_is_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marks_mod, "COMPACT_MIN", 256)
    path = tmp_path / "c.duckdb"
    store = DuckDBStore(path, durability="safe")
    await store.open()
    s = await create_session(store)
    for _ in range(60):
        await store.append(s.id, _events(s.id, 1))
    await store.close()
    line = len(f"{s.id} 60\n")
    used = len(marks_path(path).read_bytes().rstrip(b"\0"))  # the file keeps zeroed room after its lines
    assert used < 30 * line  # compacted on the way, not 60 lines
    assert read_marks(marks_path(path)) == {s.id: 60}


async def test_the_marks_file_grows_its_zeroed_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marks_mod, "CHUNK", 64)
    path = tmp_path / "g.duckdb"
    store = DuckDBStore(path, durability="safe")
    await store.open()
    sessions = [await create_session(store) for _ in range(5)]
    for s in sessions:
        await store.append(s.id, _events(s.id, 2))
    await store.close()
    data = marks_path(path).read_bytes()
    assert len(data.rstrip(b"\0")) > 64  # grown past its first chunk of room
    assert read_marks(marks_path(path)) == {s.id: 2 for s in sessions}
    again = DuckDBStore(path)
    await again.open()
    await again.close()
    assert again.lost == {}


async def test_a_clean_close_is_recorded_and_trusted_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.duckdb"
    (sid,) = await _written(path, 3)
    assert marks_path(path).read_bytes().rstrip(b"\0").endswith(b"#closed 3\n")
    grouped: list[int] = []
    real = marks_mod.stored_marks
    monkeypatch.setattr(marks_mod, "stored_marks", lambda conn: grouped.append(1) or real(conn))
    again = DuckDBStore(path)
    await again.open()
    # Trusted without reading every session's top from the log; the first append numbers on.
    assert grouped == [] and (await again.append(sid, _events(sid, 1)))[0].seq == 4
    await again.close()
    after_crash = DuckDBStore(path)
    marks = marks_path(path).read_bytes().rstrip(b"\0")
    marks_path(path).write_bytes(marks[: marks.rindex(b"#closed")])  # as a kill -9 leaves it
    await after_crash.open()
    assert grouped == [1] and after_crash.lost == {}
    await after_crash.close()


async def test_a_loss_hidden_by_an_equal_sum_of_marks_is_found_and_seqs_stay_unique(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash between a commit and its mark line leaves a session with more events than its
    mark; if another session lost as many, the marks still add up to the log's count. The open
    after such a crash compares every session, so the loss is reported, and the first append to
    the under-marked session continues after what it really holds."""
    path = tmp_path / "h.duckdb"
    a, b = await _written(path, 5, 5)
    # a's mark is 3 of 5 (its last mark lines never made it); b claims 7 of 5 (2 lost): 10 = 10.
    header = marks_path(path).read_bytes().split(b"\n", 1)[0] + b"\n"  # the database's file id
    marks_path(path).write_bytes(header + f"{a} 3\n{b} 7\n".encode())
    caplog.set_level(logging.WARNING, logger="asm.duckdb")
    store = DuckDBStore(path)
    await store.open()
    assert store.lost == {b: 2}
    assert (await store.append(a, _events(a, 1)))[0].seq == 6
    assert (await store.append(b, _events(b, 1)))[0].seq == 6
    seqs = [e.seq for e in await store.read(a)]
    await store.close()
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert any("lost 2 committed event" in r.getMessage() for r in caplog.records)
