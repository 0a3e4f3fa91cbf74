"""API keys, tenant isolation (404, never 403, for another tenant's sessions), settings errors,
loopback-only without keys, and the secret canary."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asm_kernel import Kernel, hookimpl
from asm_kernel.builtin.memory import MemoryStore
from asm_kernel.errors import ConfigError, ProviderAuthError
from asm_kernel.model import Message, MessageDone, TextBlock, TextDelta
from serve_helpers import TOKEN_A, TOKEN_B, TOKEN_OPS, ServerThread, auth, sse_messages

from asm_serve.server import AsmServer
from asm_serve.settings import load_settings


def test_requests_need_a_known_bearer_key(keyed_server: ServerThread) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        missing = client.get("/v1/sessions")
        assert missing.status_code == 401 and missing.json()["code"] == "auth.unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/v1/sessions", headers=auth("not-a-key-at-all-000000")).status_code == 401
        basic = client.get("/v1/sessions", headers={"Authorization": "Basic " + TOKEN_OPS})
        assert basic.status_code == 401 and "bearer" in basic.json()["message"]
        assert client.get("/v1/sessions", headers={"Authorization": "bearer " + TOKEN_OPS}).status_code == 200
        for open_path in ("/v1/health", "/v1/ready", "/v1/openapi.json", "/", "/static/inspector.js"):
            assert client.get(open_path).status_code == 200, open_path
        assert client.get("/v1/server", headers=auth(TOKEN_A)).json()["agent_ids"] == ["agent-a"]


def test_metrics_are_for_operator_keys(keyed_server: ServerThread) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        assert client.get("/metrics").status_code == 401
        tenant = client.get("/metrics", headers=auth(TOKEN_A))
        assert tenant.status_code == 403 and tenant.json()["code"] == "auth.forbidden"
        assert client.get("/metrics", headers=auth(TOKEN_OPS)).status_code == 200


def test_a_tenant_sees_only_its_sessions_and_others_are_not_found(keyed_server: ServerThread) -> None:
    a, b, ops = auth(TOKEN_A), auth(TOKEN_B), auth(TOKEN_OPS)
    with httpx.Client(base_url=keyed_server.url, timeout=20) as client:
        mine = client.post("/v1/sessions", headers=a, json={"tags": ["x"]}).json()
        assert mine["agent_id"] == "agent-a"  # a key with one agent need not name it
        run = client.post(f"/v1/sessions/{mine['id']}/runs", headers=a, json={"input": "private"}).json()
        client.get(f"/v1/runs/{run['id']}/await", headers=a, params={"timeout": 10})

        def not_found(path: str, method: str = "GET", **kw: Any) -> None:
            theirs = client.request(method, path, headers=b, **kw)
            missing = client.request(method, path.replace(mine["id"], "ses_nope").replace(run["id"], "run_nope"),
                                     headers=b, **kw)
            assert theirs.status_code == missing.status_code == 404, (path, theirs.text)
            # Same answer, word for word, but for the id: nothing tells that the id is taken.
            assert theirs.json()["message"].replace(mine["id"], "X").replace(run["id"], "X") == \
                missing.json()["message"].replace("ses_nope", "X").replace("run_nope", "X")
            assert theirs.json()["code"] == missing.json()["code"]

        sid, rid = mine["id"], run["id"]
        for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/events", f"/v1/sessions/{sid}/events/stream",
                     f"/v1/sessions/{sid}/transcript", f"/v1/sessions/{sid}/cost", f"/v1/sessions/{sid}/runs",
                     f"/v1/sessions/{sid}/status", f"/v1/runs/{rid}", f"/v1/runs/{rid}/await",
                     f"/v1/sessions/{sid}/approvals"):
            not_found(path)
        for path in (f"/v1/sessions/{sid}/pause", f"/v1/sessions/{sid}/cancel", f"/v1/runs/{rid}/cancel",
                     f"/v1/sessions/{sid}/runs", f"/v1/sessions/{sid}/interrupt", f"/v1/sessions/{sid}/drain"):
            not_found(path, "POST", json={"input": "x"} if path.endswith(("runs", "interrupt")) else {})
        refused = client.post("/v1/runs", headers=b, json={"input": "x", "session_id": sid})
        assert refused.status_code == 404
        assert client.get("/v1/sessions", headers=b).json()["items"] == []
        assert client.get("/v1/sessions", headers=b, params={"agent_id": "agent-a"}).json()["items"] == []
        assert [s["id"] for s in client.get("/v1/sessions", headers=a).json()["items"]] == [sid]
        assert [s["id"] for s in client.get("/v1/sessions", headers=ops).json()["items"]] == [sid]
        assert client.get(f"/v1/sessions/{sid}", headers=ops).status_code == 200
        # The session was not touched by any of B's attempts.
        assert client.get(f"/v1/sessions/{sid}", headers=a).json()["status"] == "active"


def test_what_a_tenant_may_create(keyed_server: ServerThread) -> None:
    a, b = auth(TOKEN_A), auth(TOKEN_B)
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        other = client.post("/v1/sessions", headers=a, json={"agent_id": "agent-b"})
        assert other.status_code == 403 and other.json()["code"] == "auth.forbidden"
        unnamed = client.post("/v1/sessions", headers=b, json={})
        assert unnamed.status_code == 400 and unnamed.json()["path"] == "agent_id"
        chosen = client.post("/v1/sessions", headers=a, json={"id": "guessable"})
        assert chosen.status_code == 403
        started = client.post("/v1/runs", headers=a, json={"input": "hi", "agent_id": "agent-b"})
        assert started.status_code == 403


def test_a_tenant_with_several_agents_pages_through_all_of_them(keyed_server: ServerThread) -> None:
    b = auth(TOKEN_B)
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        made = [client.post("/v1/sessions", headers=b, json={"agent_id": agent}).json()["id"]
                for agent in ("agent-b", "agent-b2", "agent-b", "agent-b2", "agent-b")]
        client.post("/v1/sessions", headers=auth(TOKEN_A), json={})
        seen: list[str] = []
        offset: int | None = 0
        while offset is not None:
            page = client.get("/v1/sessions", headers=b, params={"limit": 2, "offset": offset}).json()
            seen.extend(s["id"] for s in page["items"])
            offset = page["next_offset"]
        assert seen == list(reversed(made))


def test_sha256_keys_are_accepted() -> None:
    token = "a-token-only-the-client-knows-123"
    key = {"name": "hashed", "sha256": hashlib.sha256(token.encode()).hexdigest()}
    with ServerThread(serve={"keys": [key]}) as srv, httpx.Client(base_url=srv.url) as client:
        assert client.get("/v1/server", headers=auth(token)).json()["key"] == "hashed"
        assert client.get("/v1/server", headers=auth(token + "x")).status_code == 401


@pytest.mark.parametrize(
    ("serve", "path", "words"),
    [
        ({"keys": [{"name": "k", "token": "short"}]}, "serve.keys[0].token", "shorter than 16"),
        ({"keys": [{"name": "k"}]}, "serve.keys[0]", "exactly one of"),
        ({"keys": [{"name": "k", "token": "x" * 20, "sha256": "ab" * 32}]}, "serve.keys[0]", "exactly one of"),
        ({"keys": [{"name": "k", "sha256": "XYZ"}]}, "serve.keys[0].sha256", "64 lowercase"),
        ({"keys": [{"name": "k", "token": "x" * 20}, {"name": "k", "token": "y" * 20}]}, "serve.keys[1].name",
         "used twice"),
        ({"keys": [{"name": "k", "token": "x" * 20, "agent_ids": [" "]}]}, "serve.keys[0].agent_ids[0]", "empty"),
        ({"cors_origins": ["https://ok.example", "not an origin"]}, "serve.cors_origins[1]", "not an origin"),
        ({"prot": 1}, "serve.prot", 'did you mean "port"'),
        ({"port": 70000}, "serve.port", "65535"),
        ({"on_shutdown": "later"}, "serve.on_shutdown", "drain"),
    ],
)
def test_settings_errors_name_the_key(serve: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve)
    assert info.value.path == path and words in str(info.value)
    assert "x" * 20 not in str(info.value)


def test_without_keys_only_loopback_is_allowed() -> None:
    kernel = Kernel({"store": {"use": "memory"}})
    with pytest.raises(ConfigError) as info:
        AsmServer(kernel, load_settings({"host": "0.0.0.0"}))
    assert info.value.path == "serve.host" and "loopback" in info.value.message
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        AsmServer(kernel, load_settings({"host": host}))
    AsmServer(kernel, load_settings({"host": "0.0.0.0", "keys": [{"name": "k", "token": "z" * 24}]}))


# -- the secret canary --------------------------------------------------------------------------

API_KEY = "canary-api-key-7f3a9c1e5b2d4f60"
PROVIDER_KEY = "sk-canary-provider-9d8c7b6a5f4e3d2c"


class _Leaky:
    """A provider that echoes its own key in its answer, and in its error on the second call."""

    capabilities = frozenset({"streaming"})
    models = ()
    default_model = "leaky-1"

    def __init__(self, key: str) -> None:
        self.name = "leaky"
        self.key = key
        self.calls = 0

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        self.calls += 1
        if self.calls > 1:
            raise ProviderAuthError(f"key {self.key} was refused", provider="leaky", status=401)
        text = f"my key is {self.key}"
        yield TextDelta(text)
        yield MessageDone(Message("assistant", [TextBlock(text)]))

    async def aclose(self) -> None:
        pass


class _LeakyPlugin:
    @hookimpl
    def asm_register_providers(self, register: Any) -> None:
        import attrs

        @attrs.frozen
        class LeakySettings:
            api_key: str = ""

        register("leaky", lambda settings, ctx: _Leaky(settings.api_key), settings=LeakySettings)


class _FileBacked(MemoryStore):
    """The memory store with a file path, so the server writes its server file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


def test_secrets_never_reach_responses_streams_logs_metrics_or_the_server_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LEAKY_KEY", PROVIDER_KEY)
    monkeypatch.setenv("SERVE_KEY", API_KEY)
    from asm_kernel.config import config_from_dict

    config = config_from_dict({
        "store": {"use": "memory"},
        "providers": [{"name": "leaky", "use": "leaky", "api_key": "${LEAKY_KEY}"}],
        "serve": {"keys": [{"name": "ops", "token": "${SERVE_KEY}"}], "access_log": True},
    })
    kernel = Kernel(config, store=_FileBacked(tmp_path / "store.db"), plugins=[_LeakyPlugin()])
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with ServerThread(kernel=kernel, serve=dict(config.serve)) as srv:
        headers = auth(API_KEY)
        with httpx.Client(base_url=srv.url, timeout=20, headers=headers) as client:
            server_file = tmp_path / "store.db.server.json"
            seen.append(server_file.read_text())
            sid = client.post("/v1/sessions", json={"metadata": {"note": f"the key is {API_KEY}"}}).json()["id"]
            for text in (f"please store {API_KEY}", "again"):
                run = client.post(f"/v1/sessions/{sid}/runs", json={"input": text}).json()
                outcome = client.get(f"/v1/runs/{run['id']}/await", params={"timeout": 10})
                seen.append(outcome.text)
            for path in (f"/v1/sessions/{sid}", f"/v1/sessions/{sid}/events?limit=1000", f"/v1/sessions/{sid}/runs",
                         f"/v1/sessions/{sid}/transcript", f"/v1/sessions/{sid}/cost", "/v1/sessions?summary=true",
                         "/v1/server", "/metrics", "/v1/openapi.json", f"/v1/runs/{run['id']}"):
                response = client.get(path)
                assert response.status_code == 200, path
                seen.append(response.text)
            seen.append(client.get("/v1/sessions", headers=auth(API_KEY[:-1] + "0")).text)
            with client.stream("GET", f"/v1/sessions/{sid}/events/stream") as stream:
                lines = stream.iter_lines()
                for name, _, data in sse_messages(lines):
                    seen.append(data)
                    if name == "message" and json.loads(data)["type"] == "run_failed":
                        break
    everything = "\n".join(seen) + caplog.text
    assert "[redacted]" in everything  # the canaries were there to be hidden
    assert API_KEY not in everything and PROVIDER_KEY not in everything
    assert API_KEY[4:-4] not in everything and PROVIDER_KEY[4:-4] not in everything
    assert not (tmp_path / "store.db.server.json").exists()
