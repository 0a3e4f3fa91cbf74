"""Every endpoint over real HTTP: httpx against uvicorn on 127.0.0.1 (the server in its own thread)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from serve_helpers import ServerThread

from asm_serve.errors import STATUS_BY_CODE
from asm_serve.openapi import document


@pytest.fixture
def client(server: ServerThread) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def _session(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _run(client: httpx.Client, session_id: str, text: str = "hello there", **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/sessions/{session_id}/runs", json={"input": text, **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def _await(client: httpx.Client, run_id: str) -> dict[str, Any]:
    for _ in range(50):
        data = client.get(f"/v1/runs/{run_id}/await", params={"timeout": 5}).json()
        if data["done"]:
            return data  # type: ignore[no-any-return]
    raise AssertionError(f"run {run_id} did not end")


def test_health_ready_server_and_openapi(client: httpx.Client, server: ServerThread) -> None:
    health = client.get("/v1/health").json()
    assert health == {"status": "ok", "instance": server.server.state.instance, "version": "0.1.0"}
    assert client.get("/v1/ready").json()["status"] == "ready"
    info = client.get("/v1/server").json()
    assert info["features"] == {"approvals": True, "auth": False} and info["operator"] is True
    doc = client.get("/v1/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and doc == document(server.server.settings.max_await)


def test_every_route_is_in_the_openapi_document_and_back(server: ServerThread) -> None:
    from starlette.routing import Route

    served = {
        (method, route.path)
        for route in server.server.app.routes
        if isinstance(route, Route) and route.path.startswith(("/v1", "/metrics"))
        for method in (route.methods or ()) - {"HEAD"}
    }
    described = {(method.upper(), path) for path, ops in document()["paths"].items() for method in ops}
    assert served == described


def test_create_get_and_list_sessions(client: httpx.Client) -> None:
    made = _session(client, agent_id="support", metadata={"customer": 7}, tags=["vip"])
    assert made["status"] == "pending" and made["summary"]["last_seq"] == 1
    assert client.get("/v1/sessions/" + made["id"]).json()["metadata"] == {"customer": 7}
    others = [_session(client, agent_id="research") for _ in range(3)]
    page = client.get("/v1/sessions", params={"limit": 2}).json()
    assert [s["id"] for s in page["items"]] == [others[2]["id"], others[1]["id"]] and page["next_offset"] == 2
    rest = client.get("/v1/sessions", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in rest["items"]] == [others[0]["id"], made["id"]] and rest["next_offset"] is None
    assert [s["id"] for s in client.get("/v1/sessions", params={"agent_id": "support"}).json()["items"]] == [made["id"]]
    assert [s["id"] for s in client.get("/v1/sessions", params={"tag": "vip"}).json()["items"]] == [made["id"]]
    pending = client.get("/v1/sessions", params={"status": "pending", "summary": "true"}).json()["items"]
    assert len(pending) == 4 and all(s["summary"]["runs"] == 0 for s in pending)
    chosen = _session(client, id="my-session-1")
    assert chosen["id"] == "my-session-1"
    again = client.post("/v1/sessions", json={"id": "my-session-1"})
    assert again.status_code == 409 and again.json()["code"] == "storage.already_exists"


def test_lifecycle_transitions(client: httpx.Client) -> None:
    session = _session(client)
    sid = session["id"]
    assert client.post(f"/v1/sessions/{sid}/activate").json()["status"] == "active"
    paused = client.post(f"/v1/sessions/{sid}/pause", json={"reason": "handoff"})
    assert paused.json()["status"] == "paused"
    assert client.post(f"/v1/sessions/{sid}/resume").json()["status"] == "active"
    assert client.post(f"/v1/sessions/{sid}/complete").json()["status"] == "completed"
    refused = client.post(f"/v1/sessions/{sid}/activate")
    assert refused.status_code == 409 and refused.json()["code"] == "state.illegal_transition"
    events = client.get(f"/v1/sessions/{sid}/events").json()["items"]
    assert [e["type"] for e in events] == [
        "session_created", "session_activated", "session_paused", "session_resumed", "session_completed"]
    assert events[2]["payload"]["reason"] == "handoff"
    other = _session(client)["id"]
    assert client.post(f"/v1/sessions/{other}/cancel", json={"reason": "spam"}).json()["status"] == "cancelled"
    bad = client.post(f"/v1/sessions/{other}/resume", json={"reason": "x"})
    assert bad.status_code == 400 and bad.json()["path"] == "reason"


def test_submit_await_and_read_a_run(client: httpx.Client) -> None:
    sid = _session(client, agent_id="a")["id"]
    run = _run(client, sid, "hello there", options={"system": "be brief", "max_tokens": 50}, metadata={"k": 1})
    assert run["session_id"] == sid and run["status"] in ("pending", "running")
    outcome = _await(client, run["id"])
    assert outcome["result"]["output"] == "hello there" and outcome["run"]["status"] == "completed"
    assert outcome["result"]["provider"] == "echo" and outcome["result"]["usage"]["output_tokens"] > 0
    assert client.get(f"/v1/runs/{run['id']}").json()["metadata"]["k"] == 1
    runs = client.get(f"/v1/sessions/{sid}/runs").json()
    assert [r["id"] for r in runs["items"]] == [run["id"]]
    assert client.get(f"/v1/sessions/{sid}/runs", params={"status": "failed"}).json()["items"] == []
    summary = client.get(f"/v1/sessions/{sid}").json()["summary"]
    assert summary["runs"] == 1 and summary["provider"] == "echo" and summary["runs_by_status"] == {"completed": 1}
    transcript = client.get(f"/v1/sessions/{sid}/transcript").json()["messages"]
    assert [m["role"] for m in transcript] == ["user", "assistant"]
    cost = client.get(f"/v1/sessions/{sid}/cost").json()
    assert cost["runs"] == 1 and cost["by_model"][0]["provider"] == "echo"
    assert client.get(f"/v1/sessions/{sid}/status").json()["queued"] == []


def test_run_input_forms_and_idempotency(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    blocks = _run(client, sid, [{"type": "text", "text": "block input"}])  # type: ignore[arg-type]
    message = _run(client, sid, {"role": "user", "content": [{"type": "text", "text": "message input"}]})  # type: ignore[arg-type]
    assert _await(client, blocks["id"])["result"]["output"] == "block input"
    assert _await(client, message["id"])["result"]["output"] == "message input"
    first = _run(client, sid, "once", idempotency_key="k-1")
    second = _run(client, sid, "once", idempotency_key="k-1")
    assert first["id"] == second["id"]


def test_start_run_makes_a_session_unless_given_one(client: httpx.Client) -> None:
    started = client.post("/v1/runs", json={"input": "new here", "agent_id": "helper"})
    assert started.status_code == 202
    run = started.json()
    assert client.get(f"/v1/sessions/{run['session_id']}").json()["agent_id"] == "helper"
    again = client.post("/v1/runs", json={"input": "and again", "session_id": run["session_id"]}).json()
    assert again["session_id"] == run["session_id"]
    before = len(client.get("/v1/sessions").json()["items"])
    refused = client.post("/v1/runs", json={"input": "x", "options": {"max_tokens": 0}})
    assert refused.status_code == 400 and refused.json()["path"] == "max_tokens"
    assert len(client.get("/v1/sessions").json()["items"]) == before  # refused before the session was made


def test_cancel_a_running_run_and_a_queued_one(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    long_text = " ".join(["word"] * 400)  # 3 chars per 10 ms: seconds of streaming
    running = _run(client, sid, long_text)
    queued = _run(client, sid, "after it")
    for _ in range(200):
        if client.get(f"/v1/runs/{running['id']}").json()["status"] == "running":
            break
        time.sleep(0.02)
    cancelled = client.post(f"/v1/runs/{queued['id']}/cancel", json={"reason": "not needed"}).json()
    assert cancelled["done"] and cancelled["run"]["status"] == "cancelled"
    stopped = client.post(f"/v1/runs/{running['id']}/cancel").json()
    assert stopped["run"]["status"] == "cancelled" and stopped["result"]["status"] == "cancelled"
    again = client.post(f"/v1/runs/{running['id']}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "state.invalid"
    types = [e["type"] for e in client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["items"]]
    assert types.count("run_cancelled") == 2


def test_await_with_a_timeout_answers_not_done(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    run = _run(client, sid, " ".join(["word"] * 300))
    early = client.get(f"/v1/runs/{run['id']}/await", params={"timeout": 0}).json()
    assert early["done"] is False and early["result"] is None and early["run"]["status"] in ("pending", "running")
    client.post(f"/v1/runs/{run['id']}/cancel")


def test_interrupt_cancels_the_running_run_and_runs_the_new_input(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    first = _run(client, sid, " ".join(["word"] * 60))
    for _ in range(200):
        if client.get(f"/v1/runs/{first['id']}").json()["status"] == "running":
            break
        time.sleep(0.02)
    response = client.post(f"/v1/sessions/{sid}/interrupt", json={"input": "actually, this"})
    assert response.status_code == 202
    # The interrupted input stays in the transcript (merged with the new one): echo repeats both.
    assert _await(client, response.json()["id"])["result"]["output"].endswith("actually, this")
    assert client.get(f"/v1/runs/{first['id']}").json()["status"] == "cancelled"


def test_drain_waits_for_the_queue(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    runs = [_run(client, sid, f"message {i}") for i in range(3)]
    status = client.post(f"/v1/sessions/{sid}/drain", params={"timeout": 20}).json()
    assert status["running"] == [] and status["queued"] == []
    assert all(client.get(f"/v1/runs/{r['id']}").json()["status"] == "completed" for r in runs)


def test_events_paging_and_filters(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    run = _run(client, sid, "one two three four five six")
    _await(client, run["id"])
    everything = client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()
    seqs = [e["seq"] for e in everything["items"]]
    assert seqs == list(range(1, len(seqs) + 1)) and everything["last_seq"] == seqs[-1]
    page = client.get(f"/v1/sessions/{sid}/events", params={"after": 2, "limit": 3}).json()
    assert [e["seq"] for e in page["items"]] == [3, 4, 5] and page["next_after"] == 5
    window = client.get(f"/v1/sessions/{sid}/events", params={"after": 2, "before": 5}).json()
    assert [e["seq"] for e in window["items"]] == [3, 4] and window["next_after"] is None
    typed = client.get(f"/v1/sessions/{sid}/events", params={"types": "run_started,run_completed"}).json()
    assert [e["type"] for e in typed["items"]] == ["run_started", "run_completed"]
    repeated = client.get(f"/v1/sessions/{sid}/events?types=run_started&types=run_completed").json()
    assert repeated["items"] == typed["items"]
    by_run = client.get(f"/v1/sessions/{sid}/events", params={"run_id": run["id"], "limit": 1000}).json()
    assert by_run["items"] and all(e["run_id"] == run["id"] for e in by_run["items"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code", "where"),
    [
        ("GET", "/v1/sessions/ses_missing", {}, 404, "storage.session_not_found", None),
        ("GET", "/v1/runs/run_missing", {}, 404, "storage.run_not_found", None),
        ("GET", "/v1/nothing-here", {}, 404, "http.not_found", None),
        ("DELETE", "/v1/sessions", {}, 405, "http.method_not_allowed", None),
        ("GET", "/v1/sessions?limit=0", {}, 400, "validation.invalid", "limit"),
        ("GET", "/v1/sessions?limit=abc", {}, 400, "validation.invalid", "limit"),
        ("GET", "/v1/sessions?status=sleeping", {}, 400, "validation.invalid", "status"),
        ("GET", "/v1/sessions?summary=maybe", {}, 400, "validation.invalid", "summary"),
        ("POST", "/v1/sessions", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "validation.invalid", "body"),
        ("POST", "/v1/sessions", {"content": b'{"metadata": {"x": NaN}}'}, 400, "validation.invalid", None),
        ("POST", "/v1/sessions", {"json": {"agent": "typo"}}, 400, "validation.invalid", "agent"),
        ("POST", "/v1/sessions", {"json": {"tags": "vip"}}, 400, "validation.invalid", "tags"),
        ("POST", "/v1/sessions", {"json": [1, 2]}, 400, "validation.invalid", "body"),
        ("POST", "/v1/sessions", {"content": b"a=b", "headers": {"content-type": "text/plain"}}, 415,
         "http.unsupported_media_type", None),
        ("POST", "/v1/sessions", {"content": b'"\\ud800"'}, 400, "validation.invalid", "body"),
        ("POST", "/v1/sessions", {"content": b"[" * 100 + b"]" * 100}, 400, "validation.invalid", None),
        ("POST", "/v1/runs", {"json": {}}, 400, "validation.invalid", "input"),
        ("POST", "/v1/runs", {"json": {"input": "  "}}, 400, "validation.invalid", "input"),
        ("POST", "/v1/runs", {"json": {"input": "x", "provider": "nope"}}, 400, "config.unknown_component", "provider"),
        ("POST", "/v1/runs", {"json": {"input": "x", "options": {"front": True}}}, 400, "validation.invalid",
         "options.front"),
        ("POST", "/v1/runs", {"json": {"input": [{"type": "video"}]}}, 400, "validation.invalid", "input[0]"),
        ("POST", "/v1/runs", {"json": {"input": {"role": "assistant", "content": []}}}, 400, "validation.invalid",
         None),
        ("GET", "/v1/runs/run_x/await?timeout=-1", {}, 404, "storage.run_not_found", None),
    ],
)
def test_error_bodies_and_statuses(
    client: httpx.Client, method: str, path: str, kwargs: dict[str, Any], status: int, code: str, where: str | None
) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["message"], str) and body["message"]
    assert set(body) >= {"code", "type", "message", "retryable", "path"} and body["retryable"] is False
    if where is not None:
        assert body["path"] == where
    assert response.headers["content-type"] == "application/json"


def test_request_bodies_are_size_capped() -> None:
    with ServerThread(serve={"max_body_bytes": 1000}) as srv, httpx.Client(base_url=srv.url) as client:
        big = {"metadata": {"blob": "x" * 2000}}
        declared = client.post("/v1/sessions", json=big)
        assert declared.status_code == 413 and declared.json()["code"] == "validation.payload_too_large"

        def chunks() -> Any:  # no Content-Length: the server counts what arrives
            yield b'{"metadata": {"blob": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'"}}'

        streamed = client.post("/v1/sessions", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["code"] == "validation.payload_too_large"
        assert client.post("/v1/sessions", json={"metadata": {"small": 1}}).status_code == 201


def test_approvals_use_the_kernels_own_approvals(client: httpx.Client) -> None:
    assert client.get("/v1/server").json()["features"]["approvals"] is True
    sid = _session(client)["id"]
    run = _run(client, sid, "hi")
    listing = client.get(f"/v1/sessions/{sid}/approvals")
    assert listing.status_code == 200 and listing.json()["items"] == []  # nothing waits
    decide = client.post(f"/v1/runs/{run['id']}/approvals/call_1/approve", json={"reason": "ok"})
    assert 400 <= decide.status_code < 500 and decide.json()["code"].startswith("state.")  # it is not waiting
    assert client.post("/v1/runs/run_missing/approvals/call_1/deny").status_code == 404


def test_approvals_use_the_kernels_component_when_there_is_one() -> None:
    decided: list[tuple[str, str, bool, str | None, str]] = []

    class Approvals:
        async def pending(self, session_id: str) -> list[dict[str, Any]]:
            return [{"run_id": "r", "call_id": "c", "name": "refund"}]

        async def decide(self, run_id: str, call_id: str, *, approve: bool, reason: str | None, actor: str) -> Any:
            decided.append((run_id, call_id, approve, reason, actor))
            return {"run_id": run_id, "call_id": call_id, "approved": approve}

    with ServerThread() as srv, httpx.Client(base_url=srv.url, timeout=20) as client:
        srv.kernel.approvals = Approvals()  # type: ignore[attr-defined]
        sid = _session(client)["id"]
        run = _run(client, sid, "hi")
        assert client.get("/v1/server").json()["features"]["approvals"] is True
        assert client.get(f"/v1/sessions/{sid}/approvals").json()["items"][0]["name"] == "refund"
        answer = client.post(f"/v1/runs/{run['id']}/approvals/c/deny", json={"reason": "too much"}).json()
        assert answer == {"run_id": run["id"], "call_id": "c", "approved": False}
        assert decided == [(run["id"], "c", False, "too much", "anonymous")]


def test_metrics_count_runs_tokens_latency_and_requests(client: httpx.Client) -> None:
    sid = _session(client)["id"]
    _await(client, _run(client, sid, "count me")["id"])
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'asm_runs_finished_total{status="completed"} 1' in text
    assert 'asm_tokens_total{provider="echo",model="echo-1",kind="output"}' in text
    assert 'asm_provider_latency_seconds_count{provider="echo",model="echo-1"} 1' in text
    assert 'asm_http_requests_total{method="POST",route="runs.submit",status="202"} 1' in text
    assert "asm_runs_running 0" in text and "asm_runs_queued 0" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line


def test_the_status_table_covers_every_kernel_code_sensibly() -> None:
    from asm_kernel.errors import error_codes

    from asm_serve.errors import status_of

    for code, cls in error_codes().items():
        status = status_of(cls("x"))
        assert 400 <= status < 600, code
        if code.startswith(("validation.", "state.")):
            assert status < 500, code
    assert all(400 <= s < 600 for s in STATUS_BY_CODE.values())


def test_the_inspector_page_and_its_files_are_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/inspector.js"' in page.text and "http" not in page.text.split("<body>")[0]
    assert client.get("/static/inspector.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/inspector.css").status_code == 200
    assert client.get("/static/../asm_serve/server.py").status_code == 404
