"""asm_kernel.provider_kit: the plumbing provider plugins share (no vendor SDK needed)."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest

from asm_kernel.config import Secret
from asm_kernel.errors import (
    ConfigError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from asm_kernel.model import ModelInfo, Usage
from asm_kernel.provider_kit import (
    ClientCache,
    Deadline,
    ProviderBase,
    ProviderCall,
    error_class,
    find_api_key,
    public_url,
    require_api_key,
    safe_repr,
    scrub_text,
    transport_error_class,
    url_repr,
)
from asm_kernel.secrets import REDACTED, RedactingFilter, register_secret

SECRET = "kit-secret-4d8a2f6c"


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, None, InvalidRequestError),
        (400, RequestTooLargeError, RequestTooLargeError),
        (400, ModelNotFoundError, ModelNotFoundError),
        (400, RateLimitError, InvalidRequestError),  # a 400 is never retryable
        (401, None, ProviderAuthError),
        (402, None, QuotaExceededError),
        (403, InvalidRequestError, ProviderAuthError),
        (404, None, ModelNotFoundError),
        (408, None, ProviderTimeoutError),
        (409, None, ProviderConflictError),
        (413, None, RequestTooLargeError),
        (418, None, InvalidRequestError),
        (418, RateLimitError, RateLimitError),
        (422, None, InvalidRequestError),
        (429, None, RateLimitError),
        (429, QuotaExceededError, QuotaExceededError),
        (500, None, ProviderServerError),
        (502, None, ProviderServerError),
        (503, None, ProviderOverloadedError),
        (503, ProviderServerError, ProviderOverloadedError),  # the status decides
        (504, None, ProviderTimeoutError),
        (529, None, ProviderOverloadedError),
        (599, None, ProviderServerError),
        (None, None, ProviderServerError),
        (None, RateLimitError, RateLimitError),
        (200, InvalidRequestError, InvalidRequestError),
    ],
)
def test_one_status_map(status: int | None, kind: type[ProviderError] | None, expected: type[ProviderError]) -> None:
    assert error_class(status, kind=kind) is expected


def test_retryability_of_the_map() -> None:
    assert all(error_class(s).retryable for s in (408, 409, 429, 500, 503, 504, 529))
    assert not any(error_class(s).retryable for s in (400, 401, 402, 403, 404, 413, 422))


def test_errors_are_scrubbed_in_every_field() -> None:
    register_secret(SECRET)
    call = ProviderCall("p", "m", request_id=f"req-{SECRET}")
    err = call.error(
        ProviderServerError,
        f"server said {SECRET} at https://bob:hunter2pass@example.com/v1",
        hint=f"the key {SECRET}",
        error_code=SECRET,
        nested={"list": [SECRET]},
    )
    shown = [err.message, err.hint, str(err), repr(err), repr(err.details), str(err.to_dict()), err.request_id]
    assert all(SECRET not in text and "hunter2pass" not in text and "bob" not in text for text in shown)
    assert REDACTED in err.message and "https://example.com/v1" in err.message


def test_status_error_reads_retry_after_only_for_retryable_errors() -> None:
    call = ProviderCall("p", "m")
    assert call.status_error(429, "slow", headers={"retry-after": "3"}).retry_after == 3.0
    assert call.status_error(400, "bad", headers={"retry-after": "3"}).retry_after is None
    in_stream = call.status_error(200, "boom", kind=ProviderOverloadedError)
    assert isinstance(in_stream, ProviderOverloadedError) and in_stream.status is None


def test_default_hints_name_the_key_the_model_and_the_fix() -> None:
    key = find_api_key("some-key-value", env_var="MY_KEY", path="providers[2].api_key")
    call = ProviderCall("p", "model-x", key=key)
    assert "MY_KEY" in (call.error(ProviderAuthError, "no").hint or "")
    assert "providers[2].api_key" in (call.error(ProviderAuthError, "no").hint or "")
    assert "'model-x'" in (call.error(ModelNotFoundError, "no").hint or "")
    assert "waiting will not help" in (call.error(QuotaExceededError, "no").hint or "")
    assert call.error(RateLimitError, "no").hint is None


def test_settle_detaches_and_completes_the_error() -> None:
    call = ProviderCall("p", "m", output_started=True, usage=Usage(5, 1))

    class SdkError(Exception):
        pass

    try:
        try:
            raise SdkError(f"holds {SECRET}")
        except SdkError as exc:
            error = call.settle(exc, lambda e: ProviderConnectionError(f"wrapped: {e}"))
        raise error
    except ProviderConnectionError as raised:
        caught = raised
    assert caught.__cause__ is None and caught.__context__ is None
    assert caught.usage == Usage(5, 1) and caught.output_started and caught.details["output_started"] is True
    register_secret(SECRET)
    unscrubbed = ProviderResponseError(f"made elsewhere: {SECRET}")
    assert SECRET not in call.settle(unscrubbed, lambda e: ProviderError(str(e))).message


def test_key_lookup_setting_then_environment_then_a_typed_error() -> None:
    env = {"MY_KEY": "from-env-0123"}
    key = find_api_key(Secret("from-config-0123"), env_var="MY_KEY", path="providers[0].api_key", environ=env)
    assert key is not None and key.value == "from-config-0123" and key.source == "providers[0].api_key"
    key = find_api_key(Secret(""), env_var="MY_KEY", path="providers[0].api_key", environ=env)
    assert key is not None and key.value == "from-env-0123" and key.source == "MY_KEY"
    assert "from-env-0123" not in repr(key)
    assert scrub_text("echo from-env-0123") == f"echo {REDACTED}"  # found keys are registered secrets
    assert find_api_key(None, env_var="MY_KEY", path="p", environ={}) is None
    with pytest.raises(ConfigError) as info:
        require_api_key(None, env_var="MY_KEY", path="providers[3].api_key", vendor="Acme", environ={})
    assert info.value.path == "providers[3].api_key" and "MY_KEY" in str(info.value)
    with pytest.raises(ProviderAuthError) as auth:
        require_api_key(
            None,
            env_var="MY_KEY",
            path="providers[3].api_key",
            vendor="Acme",
            environ={},
            error=ProviderAuthError,
            provider="acme",
            model="m1",
        )
    assert "MY_KEY" in str(auth.value) and "providers[3].api_key" in str(auth.value)
    assert auth.value.provider == "acme" and not auth.value.retryable


def test_urls_in_reprs_and_messages() -> None:
    url = "https://gw-user:gw-pass-77aa@gateway.example:8443/v1"
    assert public_url(url) == "https://gateway.example:8443/v1"
    assert url_repr(url) == repr("https://gw-user:****@gateway.example:8443/v1") and url_repr(None) == "None"
    shown = safe_repr("Thing", name="t", base_url=url, note="gw-pass-77aa")
    assert shown == "Thing(name='t', base_url='https://gw-user:****@gateway.example:8443/v1', note='[redacted]')"


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_client_cache_gives_each_loop_its_own_client() -> None:
    made: list[_Client] = []

    def make() -> _Client:
        made.append(_Client())
        return made[-1]

    cache: ClientCache[_Client] = ClientCache(make, close=lambda c: c.close())

    async def use() -> tuple[_Client, _Client]:
        return cache.get(), cache.get()

    first = asyncio.run(use())
    second = asyncio.run(use())
    assert first[0] is first[1] and second[0] is second[1] and first[0] is not second[0]
    assert len(cache) == 1  # the dead loop's client was forgotten

    asyncio.run(cache.aclose())
    assert made[1].closed is False  # its loop is gone: it cannot be closed from another one
    assert len(cache) == 0

    async def use_and_close() -> _Client:
        client = cache.get()
        await cache.aclose()
        return client

    assert asyncio.run(use_and_close()).closed


async def test_deadline_bounds_each_await() -> None:
    deadline = Deadline(0.05)
    with pytest.raises(TimeoutError):
        async with deadline():
            await asyncio.Event().wait()
    unbounded = Deadline(None)
    async with unbounded():
        await asyncio.sleep(0)


def test_transport_errors_are_recognised_by_name_and_module() -> None:
    def http_error(name: str, *bases: type) -> type[Exception]:
        return type(name, bases or (Exception,), {"__module__": "httpx2._exceptions"})

    transport = http_error("TransportError")
    timeout = http_error("TimeoutException", transport)
    read_timeout = http_error("ReadTimeout", timeout)
    protocol = http_error("RemoteProtocolError", transport)
    assert transport_error_class(read_timeout()) is ProviderTimeoutError
    assert transport_error_class(protocol()) is ProviderConnectionError
    assert transport_error_class(type("TransportError", (Exception,), {})()) is None  # not from httpx
    assert transport_error_class(ValueError()) is None


class _Provider(ProviderBase[_Client]):
    default_url = "https://api.example.com"
    capabilities = frozenset({"streaming"})

    def __init__(self, settings: Any) -> None:
        super().__init__(settings, name="ex", path="providers[0]")
        self._models = (ModelInfo(settings.model, 1000, 100),)

    def make_client(self) -> _Client:
        return _Client()


class _Settings:
    model = "ex-1"
    base_url = "https://u:base-pass-9f2e@proxy.example/v1"
    headers = {"x-gateway-token": "gateway-token-31c7", "anthropic-beta": "tools-2099"}


async def test_provider_base_plumbing() -> None:
    provider = _Provider(_Settings())
    assert repr(provider) == "_Provider(name='ex', model='ex-1', base_url='https://u:****@proxy.example/v1')"
    assert provider.endpoint == "https://proxy.example/v1" and provider.default_model == "ex-1"
    assert [m.name for m in provider.models] == ["ex-1"]
    # the URL password and the secret-looking header are registered; other headers are not
    assert scrub_text("base-pass-9f2e gateway-token-31c7 tools-2099") == f"{REDACTED} {REDACTED} tools-2099"
    client = provider.clients.get()
    await provider.aclose()
    assert client.closed


def test_redacting_filter_redacts_tracebacks_logged_with_exc_info() -> None:
    register_secret(SECRET)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("asm.test.provider_kit")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"the response quoted {SECRET}")
        except RuntimeError:
            logger.error("request failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert "RuntimeError" in out.getvalue() and SECRET not in out.getvalue()


class _EnvProvider(_Provider):
    base_url_env = "KIT_TEST_BASE_URL"


def test_provider_base_reads_the_sdk_s_base_url_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unset(_Settings):
        base_url = None  # type: ignore[assignment]

    monkeypatch.setenv("KIT_TEST_BASE_URL", "https://u:env-pass-5b1d@env.example/v2")
    provider = _EnvProvider(Unset())
    assert provider.endpoint == "https://env.example/v2" and "env-pass-5b1d" not in repr(provider)
    assert scrub_text("env-pass-5b1d") == REDACTED
    monkeypatch.delenv("KIT_TEST_BASE_URL")
    assert _EnvProvider(Unset()).endpoint == "https://api.example.com"
