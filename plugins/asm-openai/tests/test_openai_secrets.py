"""Secrets never leave the plugin: a canary key and a canary URL password, reflected back by the
fake server in every way a real server or gateway can, are found nowhere asm keeps or prints."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asm_kernel import Kernel, RunStatus
from asm_kernel.config import Secret
from asm_kernel.errors import ProviderConnectionError, ProviderError
from asm_kernel.serialization import to_dict
from asm_kernel.testing.fake_http import RawResponse, RecordedRequest, assert_no_secrets, captured_logs, error_texts
from openai_helpers import collect, make_provider

from asm_openai.provider import OpenAIProvider
from asm_openai.settings import OpenAISettings
from asm_openai.testing import FakeOpenAI, HttpError, Reply, Text

CANARY_KEY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
CANARY_PASSWORD = "pw-canary-91b7d3e5f1a3"
CANARIES = (CANARY_KEY, CANARY_PASSWORD)


def reflect_in_error_fields(request: RecordedRequest) -> HttpError:
    echo = request.credentials
    return HttpError(
        401, f"Incorrect API key provided: {echo}", type=echo, code=echo, param=echo, headers={"x-request-id": echo}
    )


def reflect_in_stream_error(request: RecordedRequest) -> Reply:
    echo = request.credentials
    error = {"message": f"bad key {echo}", "type": echo, "code": echo, "param": echo}
    return Reply([Text("partial answer", chunk_size=4)], error_after=3, error=error)


def reflect_in_a_malformed_header(request: RecordedRequest) -> RawResponse:
    return RawResponse.bad_header(request.credentials)  # quoted by the exception the SDK chains


REFLECTIONS = [reflect_in_error_fields, reflect_in_stream_error, reflect_in_a_malformed_header]


def userinfo_url(fake: FakeOpenAI) -> str:
    return fake.base_url.replace("http://", f"http://alice:{CANARY_PASSWORD}@")


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """DEBUG logs of the SDK, its HTTP library and asm, through a handler with a RedactingFilter."""
    with captured_logs("httpx", "httpx2", "httpcore", "httpcore2", "openai", "asm") as out:
        yield out


@pytest.mark.parametrize("reflect", REFLECTIONS)
async def test_reflected_keys_are_scrubbed_from_every_field(
    fake_openai: FakeOpenAI, api: str, reflect: Callable[[RecordedRequest], Any]
) -> None:
    fake_openai.enqueue(reflect)
    provider = make_provider(fake_openai, api, api_key=Secret(CANARY_KEY))
    with pytest.raises(ProviderError) as info:
        await collect(provider)
    err = info.value
    assert fake_openai.last.credentials == CANARY_KEY  # the server really did echo the key
    assert_no_secrets(error_texts(err), *CANARIES)
    assert err.__cause__ is None and err.__context__ is None  # no SDK exception (holding the key) chained


async def test_a_key_from_the_environment_is_scrubbed_too(fake_openai: FakeOpenAI, monkeypatch, api: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY_KEY)
    fake_openai.enqueue(reflect_in_error_fields)
    provider = OpenAIProvider(OpenAISettings(api=api, base_url=fake_openai.base_url, capabilities=["streaming"]))
    with pytest.raises(ProviderError) as info:
        await collect(provider)
    assert fake_openai.last.credentials == CANARY_KEY
    assert_no_secrets(error_texts(info.value), *CANARIES)


async def test_a_url_password_is_masked_in_reprs_logs_and_errors(
    fake_openai: FakeOpenAI, api: str, logs: io.StringIO
) -> None:
    settings = OpenAISettings(api=api, base_url=userinfo_url(fake_openai), api_key=Secret(CANARY_KEY))
    provider = OpenAIProvider(settings, name="gw")
    assert "alice:****@" in repr(provider) and "alice:****@" in repr(settings)
    fake_openai.enqueue(Reply([Text("fine")]), reflect_in_error_fields)
    assert (await collect(provider))[-1].message.text == "fine"
    with pytest.raises(ProviderError) as info:
        await collect(provider)
    assert CANARY_PASSWORD in fake_openai.last.credentials  # the gateway saw (and echoed) it
    logged = logs.getvalue()
    assert "HTTP Request: POST" in logged  # the HTTP library did log the URL it called
    assert_no_secrets([repr(provider), repr(settings), str(settings), logged, *error_texts(info.value)], *CANARIES)


async def test_connection_errors_name_the_host_not_the_credentials(api: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://alice:{CANARY_PASSWORD}@127.0.0.1:{port}/v1"
    provider = OpenAIProvider(OpenAISettings(api=api, base_url=url, api_key=Secret(CANARY_KEY)))
    with pytest.raises(ProviderConnectionError) as info:
        await collect(provider)
    assert f"127.0.0.1:{port}" in info.value.message and "alice" not in info.value.message
    assert_no_secrets(error_texts(info.value), *CANARIES)


async def test_nothing_the_plugin_produced_holds_a_canary(fake_openai: FakeOpenAI, logs: io.StringIO) -> None:
    """Runs through a kernel on the memory store, with every reflection, then a search of all of it."""
    common = {"use": "openai", "api_key": CANARY_KEY, "capabilities": ["streaming", "usage"]}
    config = {
        "store": {"use": "memory"},
        "resilience": {"max_attempts": 1},
        "providers": [
            {"name": "gpt", "api": "chat", "base_url": fake_openai.base_url, **common},
            {"name": "gw", "api": "responses", "base_url": userinfo_url(fake_openai), **common},
        ],
    }
    produced: list[str] = []
    async with Kernel(config) as kernel:
        for provider in ("gpt", "gw"):
            fake_openai.enqueue(Reply([Text("a good answer")]), *REFLECTIONS)
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
    echoed = [r.credentials for r in fake_openai.requests]
    assert CANARY_KEY in echoed and any(CANARY_PASSWORD in e for e in echoed)  # the fake did echo both
    produced.append(logs.getvalue())
    assert_no_secrets(produced, *CANARIES)
