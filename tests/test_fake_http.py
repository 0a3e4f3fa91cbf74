"""asm_kernel.testing.fake_http: the base of the plugins' fake servers, driven by a stdlib client."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from asm_kernel.testing.fake_http import (
    FakeHTTPServer,
    JsonResponse,
    RawResponse,
    RecordedRequest,
    SSEEvent,
    SSEResponse,
    Stall,
)


@pytest.fixture
def fake() -> Iterator[FakeHTTPServer]:
    with FakeHTTPServer() as server:
        yield server


_CONNECTIONS: list[http.client.HTTPConnection] = []


def close_connections() -> None:
    while _CONNECTIONS:
        _CONNECTIONS.pop().close()


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    """Every client connection a test opened is closed after it (warnings are errors here)."""
    yield
    close_connections()


def connect(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    _CONNECTIONS.append(conn)
    return conn


def request(
    fake: FakeHTTPServer, path: str = "/v1/x", body: Any = None, timeout: float = 5.0, **headers: str
) -> http.client.HTTPResponse:
    host, port = fake.url.removeprefix("http://").split(":")
    conn = connect(host, int(port), timeout=timeout)
    data = json.dumps(body).encode() if body is not None else None
    conn.request("POST" if data else "GET", path, body=data, headers={"content-type": "application/json", **headers})
    return conn.getresponse()


def test_scripts_are_fifo_per_route_then_shared_then_default(fake: FakeHTTPServer) -> None:
    fake.script(JsonResponse(200, {"n": "a1"}), JsonResponse(200, {"n": "a2"}), route="/v1/a")
    fake.script(JsonResponse(201, {"n": "shared"}))
    fake.default = JsonResponse(202, {"n": "default"})
    answers = [json.loads(request(fake, path).read())["n"] for path in ("/v1/b", "/v1/a", "/v1/a/", "/v1/a", "/v1/b")]
    assert answers == ["shared", "a1", "a2", "default", "default"]
    assert fake.pending == 0


def test_requests_are_recorded(fake: FakeHTTPServer) -> None:
    fake.script(JsonResponse(400, {"error": "no"}, headers={"X-Thing": "1"}))
    response = request(fake, "/v1/x?debug=1", body={"q": 1}, **{"X-Api-Key": "k"})
    assert response.status == 400 and response.getheader("x-thing") == "1"
    response.read()
    (record,) = fake.wait_for_requests(1)
    assert record.finished.wait(5)
    assert (record.method, record.path, record.route, record.body) == ("POST", "/v1/x?debug=1", "/v1/x", {"q": 1})
    assert record.headers["x-api-key"] == "k" and record.request_id.startswith("req_")
    assert record.outcome == "error" and fake.last is record and fake.bodies() == [{"q": 1}]


def test_nothing_scripted_is_a_500_that_says_so(fake: FakeHTTPServer) -> None:
    response = request(fake)
    assert response.status == 500 and b"nothing scripted" in response.read()


def test_a_callable_answers_from_the_request(fake: FakeHTTPServer) -> None:
    def reflect(req: RecordedRequest) -> JsonResponse:
        return JsonResponse(401, {"echo": req.headers.get("authorization")}, headers={"x-request-id": req.request_id})

    fake.script(reflect)
    response = request(fake, authorization="Bearer sk-echo")
    assert json.loads(response.read()) == {"echo": "Bearer sk-echo"}
    assert response.getheader("x-request-id") == fake.last.request_id


def test_sse_events_in_chunks(fake: FakeHTTPServer) -> None:
    fake.script(SSEResponse([SSEEvent({"a": 1}, event="start"), SSEEvent("[DONE]"), b": comment\n\n"]))
    response = request(fake)
    assert response.getheader("content-type").startswith("text/event-stream")
    assert response.read() == b'event: start\ndata: {"a":1}\n\ndata: [DONE]\n\n: comment\n\n'
    assert fake.wait_for(lambda f: f.completed_streams == 1)


def test_faults_cut_the_stream_at_the_earliest_event() -> None:
    events = [SSEEvent(n) for n in range(5)]
    error = SSEEvent("boom", event="error")
    dropped = SSEResponse.with_faults(events, drop_at=2, error_at=2, error=lambda n: error)
    assert dropped.events == events[:2] and dropped.end == "drop"
    errored = SSEResponse.with_faults(events, end_at=4, error_at=3, error=lambda n: error)
    assert errored.events == [*events[:3], error] and errored.end == "complete"
    assert SSEResponse.with_faults(events, end_at=9).events == events


def test_a_dropped_stream_is_an_incomplete_body(fake: FakeHTTPServer) -> None:
    fake.script(SSEResponse([SSEEvent("one")], end="drop"))
    response = request(fake)
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    assert fake.last.finished.wait(5) and fake.last.outcome == "dropped"


def test_a_client_leaving_a_hanging_stream_is_recorded(fake: FakeHTTPServer) -> None:
    fake.script(SSEResponse([SSEEvent("first")], end="hang"))
    response = request(fake, timeout=0.5)
    assert response.readline() == b"data: first\n"  # the event arrived, then nothing more
    response.close()
    close_connections()  # the client goes away
    assert fake.wait_for(lambda f: f.disconnects == 1)
    assert fake.last.outcome == "client_closed" and fake.completed_streams == 0


def test_a_stall_sends_nothing(fake: FakeHTTPServer) -> None:
    fake.script(Stall())
    with pytest.raises(socket.timeout):
        request(fake, timeout=0.3)
    close_connections()  # the client gives up
    assert fake.wait_for(lambda f: f.last.outcome == "client_closed")


def test_stopping_cuts_what_is_still_being_written() -> None:
    server = FakeHTTPServer().start()
    server.script(Stall())
    host, port = server.url.removeprefix("http://").split(":")
    conn = connect(host, int(port), timeout=5)
    conn.request("GET", "/slow")
    server.wait_for_requests(1)
    server.stop()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    assert server.requests[0].finished.wait(5) and server.requests[0].outcome == "dropped"


def test_raw_bytes_reach_the_client_verbatim(fake: FakeHTTPServer) -> None:
    raw = b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"
    fake.script(RawResponse(raw))
    host, port = fake.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /v1/raw HTTP/1.1\r\nhost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == raw  # then the connection was closed


def test_credentials_and_the_canary_helpers(fake: FakeHTTPServer) -> None:
    import base64
    import logging

    from asm_kernel.errors import ProviderServerError
    from asm_kernel.secrets import register_secret
    from asm_kernel.testing.fake_http import assert_no_secrets, captured_logs, error_texts

    fake.default = JsonResponse(200, {})
    basic = base64.b64encode(b"alice:canary-pass-0e1f").decode()
    for headers in (
        {"authorization": "Bearer canary-key-7a8b"},
        {"authorization": f"Basic {basic}"},
        {"x-api-key": "canary-key-7a8b"},
    ):
        request(fake, **headers).read()
    assert [r.credentials for r in fake.requests] == ["canary-key-7a8b", "alice:canary-pass-0e1f", "canary-key-7a8b"]

    register_secret("canary-key-7a8b")
    with captured_logs("asm.test.fake_http") as out:
        logging.getLogger("asm.test.fake_http").debug("sent %s", "canary-key-7a8b")
    error = ProviderServerError("the server echoed canary-pass-0e1f")
    assert_no_secrets([out.getvalue()], "canary-key-7a8b")
    with pytest.raises(AssertionError, match="leaked"):
        assert_no_secrets(error_texts(error), "canary-pass-0e1f")
