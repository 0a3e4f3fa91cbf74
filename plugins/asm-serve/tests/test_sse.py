"""The event stream over real HTTP: replay then live, resume after forced disconnects with no gap
and no duplicate, filters, keep-alive, back-pressure."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from serve_helpers import ServerThread, sse_messages

from asm_serve.hub import Stream


def _session(client: httpx.Client) -> str:
    return client.post("/v1/sessions", json={}).json()["id"]  # type: ignore[no-any-return]


def _submit(client: httpx.Client, sid: str, text: str) -> str:
    response = client.post(f"/v1/sessions/{sid}/runs", json={"input": text})
    assert response.status_code == 202
    return response.json()["id"]  # type: ignore[no-any-return]


def _log(client: httpx.Client, sid: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["items"]  # type: ignore[no-any-return]


def _read(
    client: httpx.Client, sid: str, *, until: Any, headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None, stop_after: int | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Events (and control event names) of one connection, until ``until(event)`` or ``stop_after`` events."""
    got: list[dict[str, Any]] = []
    controls: list[str] = []
    with client.stream("GET", f"/v1/sessions/{sid}/events/stream", headers=headers, params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for name, ident, data in sse_messages(response.iter_lines()):
            if name != "message":
                controls.append(name)
                break
            event = json.loads(data)
            assert ident == str(event["seq"])
            got.append(event)
            if until(event) or (stop_after is not None and len(got) >= stop_after):
                break
    return got, controls


def test_replay_then_live_with_no_gap(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sid = _session(client)
        first = _submit(client, sid, "before the stream opened")
        client.get(f"/v1/runs/{first}/await", params={"timeout": 10})
        threading.Timer(0.3, lambda: _submit(client, sid, "while the stream is open, streamed in pieces")).start()
        got, _ = _read(client, sid, until=lambda e: e["type"] == "run_completed" and e["run_id"] != first)
        assert [e["seq"] for e in got] == list(range(1, len(got) + 1))
        assert got == _log(client, sid)[: len(got)]


def test_resume_after_forced_disconnects_has_no_gap_and_no_duplicate(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sid = _session(client)
        run_id = _submit(client, sid, " ".join(f"w{i}" for i in range(150)))  # ~3 chars per 10 ms
        received: list[dict[str, Any]] = []
        disconnects = 0
        while not received or received[-1]["type"] != "run_completed":
            last = received[-1]["seq"] if received else 0
            # Drop the connection after a few events, mid-run, and come back with Last-Event-ID.
            got, _ = _read(client, sid, headers={"Last-Event-ID": str(last)},
                           until=lambda e: e["type"] == "run_completed", stop_after=7)
            received.extend(got)
            disconnects += 1
        assert disconnects >= 3
        seqs = [e["seq"] for e in received]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate"
        assert received == _log(client, sid)
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "completed"


def test_after_and_last_event_id_and_filters(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sid = _session(client)
        one = _submit(client, sid, "first run")
        client.get(f"/v1/runs/{one}/await", params={"timeout": 10})
        two = _submit(client, sid, "second run")
        client.get(f"/v1/runs/{two}/await", params={"timeout": 10})
        log = _log(client, sid)
        got, _ = _read(client, sid, params={"after": 5}, until=lambda e: e["seq"] == log[-1]["seq"])
        assert [e["seq"] for e in got] == [e["seq"] for e in log[5:]]
        # The header (what a reconnecting EventSource sends) wins over ?after=.
        got, _ = _read(client, sid, params={"after": 1}, headers={"Last-Event-ID": "9"},
                       until=lambda e: e["seq"] == log[-1]["seq"])
        assert got[0]["seq"] == 10
        got, _ = _read(client, sid, params={"types": "run_completed"}, until=lambda e: e["run_id"] == two)
        assert [(e["type"], e["run_id"]) for e in got] == [("run_completed", one), ("run_completed", two)]
        got, _ = _read(client, sid, params={"run_id": two}, until=lambda e: e["type"] == "run_completed")
        assert got and {e["run_id"] for e in got} == {two}
        bad = client.get(f"/v1/sessions/{sid}/events/stream", headers={"Last-Event-ID": "seven"})
        assert bad.status_code == 400 and bad.json()["path"] == "Last-Event-ID"
        assert client.get("/v1/sessions/ses_none/events/stream").status_code == 404


def test_keep_alive_comments() -> None:
    with ServerThread(serve={"sse_ping": 0.2}) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        sid = _session(client)
        with client.stream("GET", f"/v1/sessions/{sid}/events/stream", params={"after": 1}) as response:
            for line in response.iter_lines():
                if line.startswith(":"):
                    assert line == ": ping"
                    break


def test_a_stream_that_falls_behind_is_cut_off_and_resumes(tmp_path: Any) -> None:
    """Events big enough to fill the sockets' buffers: a client that does not read makes the
    server's sends block, its 8-event buffer overflows, and the stream is ended, not grown."""
    echo = {"name": "echo", "use": "echo", "chunk_size": 20_000, "delay": 0.002}
    serve = {"sse_buffer": 8, "max_body_bytes": 4_000_000, "sse_send_timeout": 60}
    with ServerThread({"providers": [echo]}, serve=serve) as srv, httpx.Client(base_url=srv.url, timeout=60) as client:
        sid = _session(client)
        with client.stream("GET", f"/v1/sessions/{sid}/events/stream", params={"after": 1}) as response:
            runs = [_submit(client, sid, "x" * 1_000_000 + str(i)) for i in range(8)]
            for run in runs:
                client.get(f"/v1/runs/{run}/await", params={"timeout": 60})
            assert srv.server.state.hubs.slow_consumers == 1
            assert srv.server.state.hubs.buffered() == 0  # dropped, not kept
            got: list[dict[str, Any]] = []
            close: dict[str, Any] | None = None
            for name, _, data in sse_messages(response.iter_lines()):
                if name == "close":
                    close = json.loads(data)
                    break
                got.append(json.loads(data))
        assert close is not None and close["reason"] == "slow_consumer"
        assert close["error"]["code"] == "serve.slow_consumer" and close["error"]["retryable"] is True
        seqs = [e["seq"] for e in got]
        assert seqs == list(range(2, 2 + len(seqs))) and close["last_event_id"] == seqs[-1]
        last_seq = client.get(f"/v1/sessions/{sid}").json()["summary"]["last_seq"]
        assert seqs[-1] < last_seq
        rest, _ = _read(client, sid, headers={"Last-Event-ID": str(close["last_event_id"])},
                        until=lambda e: e["seq"] == last_seq)
        assert [e["seq"] for e in rest] == list(range(seqs[-1] + 1, last_seq + 1))


def test_a_stream_buffer_never_holds_more_than_its_capacity() -> None:
    import asyncio

    async def go() -> None:
        stream = Stream(None, None, capacity=3)
        assert all(stream.offer(i, b"x") for i in range(1, 4))
        assert stream.peak == 3 and stream.closed is None
        assert stream.offer(4, b"x") is False
        assert stream.closed is not None and stream.closed[0] == "slow_consumer" and not stream.buffer
        assert stream.offer(5, b"x") is True and not stream.buffer  # ended: takes nothing more

    asyncio.run(go())


def test_streams_are_counted_and_capped() -> None:
    with ServerThread(serve={"max_streams": 1}) as srv, httpx.Client(base_url=srv.url, timeout=10) as client:
        sid = _session(client)
        with client.stream("GET", f"/v1/sessions/{sid}/events/stream") as first:
            assert first.status_code == 200
            for _ in range(100):
                if srv.server.state.hubs.streams == 1:
                    break
                time.sleep(0.02)
            second = client.get(f"/v1/sessions/{sid}/events/stream")
            assert second.status_code == 503 and second.json()["code"] == "runtime.limit_exceeded"
            assert second.headers["retry-after"] == "1"
        for _ in range(200):
            if srv.server.state.hubs.streams == 0:
                break
            time.sleep(0.02)
        assert srv.server.state.hubs.streams == 0 and len(srv.server.state.hubs) == 0


def test_head_of_the_stream_does_not_hang(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        sid = _session(client)
        assert client.head(f"/v1/sessions/{sid}/events/stream").status_code == 200
