"""Secrets never leave the plugin: a canary key and a canary URL password, reflected back by the
fake server in every way a real server or gateway can, are found nowhere asm keeps or prints."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anthropic_helpers import collect, make_request
from asm_anthropic.provider import AnthropicProvider
from asm_anthropic.settings import AnthropicSettings
from asm_anthropic.testing import ErrorReply, FakeAnthropic, Reply, text_block

from asm_kernel import Kernel, RunStatus
from asm_kernel.config import Secret
from asm_kernel.errors import ProviderConnectionError, ProviderError
from asm_kernel.serialization import to_dict
from asm_kernel.testing.fake_http import (
    FakeHTTPServer,
    RawResponse,
    RecordedRequest,
    assert_no_secrets,
    captured_logs,
    error_texts,
)

CANARY_KEY = "sk-ant-canary-3e9b7a5c1d2f4e6a"
CANARY_PASSWORD = "pw-canary-5d1f3b7e9a2c"
CANARIES = (CANARY_KEY, CANARY_PASSWORD)


class BehindAGateway(FakeAnthropic):
    """The fake behind a gateway that takes basic credentials: what a ``base_url`` with userinfo
    makes the HTTP library send (in place of the key)."""

    def handle(self, request: RecordedRequest) -> Any:
        if request.headers.get("authorization", "").startswith("Basic "):
            return FakeHTTPServer.handle(self, request)  # the gateway checked the credentials
        return super().handle(request)


@pytest.fixture
def gateway() -> Iterator[BehindAGateway]:
    with BehindAGateway() as fake:
        yield fake


def reflect_in_error_fields(request: RecordedRequest) -> ErrorReply:
    echo = request.credentials
    error = {"type": echo, "message": f"invalid x-api-key {echo}", "details": {"error_code": echo}}
    body = json.dumps({"type": "error", "error": error, "request_id": echo}).encode()
    return ErrorReply(401, headers={"request-id": echo}, body=body)


def reflect_in_stream_error(request: RecordedRequest) -> Reply:
    echo = request.credentials
    return Reply([text_block("partial answer")], chunk=4, error_at=4, error={"type": echo, "message": f"bad {echo}"})


def reflect_in_a_malformed_header(request: RecordedRequest) -> RawResponse:
    return RawResponse.bad_header(request.credentials)  # quoted by the exception the SDK chains


REFLECTIONS = [reflect_in_error_fields, reflect_in_stream_error, reflect_in_a_malformed_header]


def userinfo_url(fake: FakeAnthropic) -> str:
    return fake.url.replace("http://", f"http://alice:{CANARY_PASSWORD}@")


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """DEBUG logs of the SDK, its HTTP library and asm, through a handler with a RedactingFilter."""
    with captured_logs("httpx", "httpx2", "httpcore", "httpcore2", "anthropic", "asm") as out:
        yield out


@pytest.mark.parametrize("reflect", REFLECTIONS)
async def test_reflected_keys_are_scrubbed_from_every_field(
    fake_anthropic: FakeAnthropic, make_provider, reflect: Callable[[RecordedRequest], Any]
) -> None:
    fake_anthropic.push(reflect)
    with pytest.raises(ProviderError) as info:
        await collect(make_provider(api_key=Secret(CANARY_KEY)), make_request())
    err = info.value
    assert fake_anthropic.last.credentials == CANARY_KEY  # the server really did echo the key
    assert_no_secrets(error_texts(err), *CANARIES)
    assert err.__cause__ is None and err.__context__ is None  # no SDK exception (holding the key) chained


async def test_a_key_from_the_environment_is_scrubbed_too(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(reflect_in_error_fields)
    provider = AnthropicProvider(
        AnthropicSettings(base_url=fake_anthropic.url), environ={"ANTHROPIC_API_KEY": CANARY_KEY}
    )
    try:
        with pytest.raises(ProviderError) as info:
            await collect(provider, make_request())
    finally:
        await provider.aclose()
    assert fake_anthropic.last.credentials == CANARY_KEY
    assert_no_secrets(error_texts(info.value), *CANARIES)


async def test_a_url_password_is_masked_in_reprs_logs_and_errors(
    gateway: BehindAGateway, make_provider, logs: io.StringIO
) -> None:
    provider = make_provider(base_url=userinfo_url(gateway), api_key=Secret(CANARY_KEY))
    assert "alice:****@" in repr(provider) and "alice:****@" in repr(provider.settings)
    gateway.reply_text("fine")
    gateway.push(reflect_in_error_fields)
    assert (await collect(provider, make_request()))[-1].message.text == "fine"
    with pytest.raises(ProviderError) as info:
        await collect(provider, make_request())
    assert CANARY_PASSWORD in gateway.last.credentials  # the gateway saw (and echoed) it
    logged = logs.getvalue()
    assert "HTTP Request: POST" in logged  # the HTTP library did log the URL it called
    assert_no_secrets(
        [repr(provider), repr(provider.settings), str(provider.settings), logged, *error_texts(info.value)], *CANARIES
    )


async def test_connection_errors_name_the_host_not_the_credentials(make_provider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = make_provider(base_url=f"http://alice:{CANARY_PASSWORD}@127.0.0.1:{port}", api_key=Secret(CANARY_KEY))
    with pytest.raises(ProviderConnectionError) as info:
        await collect(provider, make_request())
    assert f"127.0.0.1:{port}" in info.value.message and "alice" not in info.value.message
    assert_no_secrets(error_texts(info.value), *CANARIES)


async def test_nothing_the_plugin_produced_holds_a_canary(gateway: BehindAGateway, logs: io.StringIO) -> None:
    """Runs through a kernel on the memory store, with every reflection, then a search of all of it."""
    config = {
        "store": {"use": "memory"},
        "resilience": {"max_attempts": 1},
        "providers": [
            {"name": "claude", "use": "anthropic", "base_url": gateway.url, "api_key": CANARY_KEY},
            {"name": "gw", "use": "anthropic", "base_url": userinfo_url(gateway), "api_key": CANARY_KEY},
        ],
    }
    produced: list[str] = []
    async with Kernel(config) as kernel:
        for provider in ("claude", "gw"):
            gateway.reply_text("a good answer")
            gateway.push(*REFLECTIONS)
            result = await kernel.run_once("hello", provider=provider)
            assert result.status is RunStatus.COMPLETED
            produced.append(repr(result))
            for _ in REFLECTIONS:
                with pytest.raises(ProviderError) as info:
                    await kernel.run_once("hello", provider=provider)
                produced += error_texts(info.value)
                run = await kernel.sessions.get_run(info.value.details["run_id"])
                assert run.status is RunStatus.FAILED
                produced.append(json.dumps(run.error))
        for session in await kernel.sessions.list():
            produced += [json.dumps(to_dict(event), default=str) for event in await kernel.sessions.events(session.id)]
            produced += [json.dumps(to_dict(run), default=str) for run in await kernel.sessions.runs(session.id)]
        produced += [repr(p) for p in kernel.providers.values()]
    echoed = [r.credentials for r in gateway.requests]
    assert CANARY_KEY in echoed and any(CANARY_PASSWORD in e for e in echoed)  # the fake did echo both
    produced.append(logs.getvalue())
    assert_no_secrets(produced, *CANARIES)
