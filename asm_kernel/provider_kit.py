"""Plumbing every HTTP provider plugin needs, so that a new one only maps its wire format.

* :func:`error_class` and :data:`STATUS_ERRORS`: the one HTTP-status → asm-error map, refined
  by the class the provider's own error vocabulary names (its ``type``/``code``) where a status
  alone is ambiguous (a 429 that is really a spent quota, a 400 that says the prompt is too long);
* :class:`ProviderCall`: the state of one call (provider, model, request id, whether output
  reached the caller, the usage reported so far) and the builder of its typed errors, with every
  registered secret and every URL password scrubbed from every field;
* :meth:`ProviderCall.settle`: the error to raise for any exception, detached from it, so an SDK
  exception (which holds the request, its headers, the key) is never chained to what asm raises;
* :class:`ClientCache`: one SDK client per event loop (their connection pools belong to the loop
  that opened them), all closed by :meth:`ClientCache.aclose`;
* :class:`ProviderBase`: name, settings, endpoint, clients, declarations and a safe repr, so a
  provider class holds only its client factory and its ``stream``;
* :func:`require_api_key`: the setting, else the environment variable, else a typed error that
  names both;
* :func:`safe_repr`, :func:`public_url`, :func:`scrub_text`: reprs and messages that never show a
  secret or a URL's userinfo;
* :class:`Deadline`: a response's ``total_timeout`` applied to each await, never across a yield;
* :func:`transport_error_class`: timeout or connection, for the HTTP library's own exceptions.

Nothing here imports a vendor SDK or an HTTP library, and importing the module does no work.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from attrs import define, field, frozen

from .errors import (
    AsmError,
    ConfigError,
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
    ProviderConflictError,
    ProviderConnectionError,
    ProviderError,
    ProviderOverloadedError,
    ProviderServerError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
)
from .model import ModelInfo, Usage
from .resilience import parse_retry_after
from .secrets import Secret, mask_url, redact_text, register_secret

__all__ = [
    "STATUS_ERRORS",
    "error_class",
    "ProviderCall",
    "scrub_error",
    "scrub_text",
    "public_url",
    "safe_repr",
    "url_repr",
    "ApiKey",
    "find_api_key",
    "register_header_secrets",
    "require_api_key",
    "ClientCache",
    "ProviderBase",
    "Deadline",
    "transport_error_class",
]

#: HTTP status → asm error class, for every provider. 409 is a conflicting concurrent change
#: that the same request survives a moment later (retryable); 503 means the service cannot take
#: the request right now (OpenAI's "overloaded"/"slow down", a proxy in front of an overloaded
#: API), which asks for the same back-off and failover as Anthropic's 529, so both are
#: ``overloaded``. Unlisted statuses: 5xx are server errors, other 4xx invalid requests.
STATUS_ERRORS: Mapping[int, type[ProviderError]] = MappingProxyType(
    {
        400: InvalidRequestError,
        401: ProviderAuthError,
        402: QuotaExceededError,
        403: ProviderAuthError,
        404: ModelNotFoundError,
        408: ProviderTimeoutError,
        409: ProviderConflictError,
        413: RequestTooLargeError,
        422: InvalidRequestError,
        429: RateLimitError,
        500: ProviderServerError,
        502: ProviderServerError,
        503: ProviderOverloadedError,
        504: ProviderTimeoutError,
        529: ProviderOverloadedError,
    }
)

# A 400 is the catch-all of client errors; these more precise readings of its body win.
_REFINES_400 = frozenset({RequestTooLargeError, ModelNotFoundError, QuotaExceededError})


def error_class(status: int | None, *, kind: type[ProviderError] | None = None) -> type[ProviderError]:
    """The asm error class for an HTTP ``status``, refined by ``kind``.

    ``kind`` is what the provider's own error vocabulary says (its error ``type`` or ``code``
    mapped by the plugin), or None. The status decides, except that a 429 whose body says the
    quota is spent is :class:`QuotaExceededError` (waiting will not help), a 400 may be made
    more precise, and an error with no status (one inside a 200 stream) is ``kind``, else a
    server error.
    """
    if status is None or 200 <= status < 300:
        return kind or ProviderServerError
    if status == 429 and kind is QuotaExceededError:
        return QuotaExceededError
    if status == 400 and kind in _REFINES_400:
        return kind
    known = STATUS_ERRORS.get(status)
    if known is not None:
        return known
    if status >= 500:
        return ProviderServerError
    return kind or InvalidRequestError


# -- secrets in text ------------------------------------------------------------------------

_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]+@")


def scrub_text(text: str) -> str:
    """``text`` without any registered secret and without the userinfo of any URL in it."""
    return redact_text(_USERINFO.sub("", text))


def _scrub_data(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: _scrub_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_data(v) for v in value)
    return value


def public_url(url: str) -> str:
    """``url`` without its userinfo (for messages: name the host, never the credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return scrub_text(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return redact_text(urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, "")))


def safe_repr(type_name: str, /, **fields: object) -> str:
    """``Type(a=..., b=...)`` with URL passwords masked and every registered secret removed."""
    shown: list[str] = []
    for name, value in fields.items():
        if isinstance(value, str):
            value = mask_url(value) if "://" in value else redact_text(value)
        shown.append(f"{name}={value!r}")
    return f"{type_name}({', '.join(shown)})"


def url_repr(value: str | None) -> str:
    """``repr`` of a URL setting with its password masked: ``field(repr=url_repr)`` in attrs."""
    return repr(mask_url(value) if isinstance(value, str) else value)


def scrub_error(error: AsmError) -> AsmError:
    """Remove every registered secret and URL userinfo from every field of ``error``, in place."""
    error.message = scrub_text(error.message)
    if error.hint:
        error.hint = scrub_text(error.hint)
    error.details = _scrub_data(error.details)
    for attr in ("provider", "model", "request_id"):
        value = getattr(error, attr, None)
        if isinstance(value, str):
            setattr(error, attr, scrub_text(value))
    error.args = (error._render(),)
    return error


# -- one call and its errors ----------------------------------------------------------------


@frozen
class ApiKey:
    """A key to send and where it came from (``source``: the env var or the config path)."""

    value: str = field(repr=False)
    source: str
    env_var: str
    path: str


@define
class ProviderCall:
    """One request to a provider: what its errors carry, and how they are made.

    The stream code updates :attr:`output_started`, :attr:`request_id` and :attr:`usage` as the
    response arrives; every error made afterwards reports them, so a failed attempt's billed
    tokens reach the kernel and failover knows whether the caller saw output.
    """

    provider: str
    model: str
    #: how messages name the other side: "OpenAI", "the Anthropic API", ...
    vendor: str = "the provider"
    key: ApiKey | None = None
    output_started: bool = False
    request_id: str | None = None
    usage: Usage | None = None

    def error(
        self, cls: type[ProviderError], message: str, *, hint: str | None = None, **details: Any
    ) -> ProviderError:
        """A ``cls`` error for this call, every field scrubbed of secrets."""
        details.setdefault("request_id", self.request_id)
        details.setdefault("usage", self.usage)
        error = cls(
            message,
            provider=self.provider,
            model=self.model,
            output_started=self.output_started,
            hint=hint if hint is not None else self._default_hint(cls),
            **details,
        )
        scrub_error(error)
        return error

    def status_error(
        self,
        status: int | None,
        message: str,
        *,
        kind: type[ProviderError] | None = None,
        headers: Mapping[str, str] | None = None,
        **details: Any,
    ) -> ProviderError:
        """The error for an HTTP error (or, with ``status`` None, an error inside a 200 stream).

        ``retry_after`` comes from the headers when the error is worth retrying.
        """
        cls = error_class(status, kind=kind)
        if cls.retryable:
            details.setdefault("retry_after", parse_retry_after(headers))
        return self.error(cls, message, status=status if status and status >= 300 else None, **details)

    def settle(self, exc: BaseException, translate: Callable[[BaseException], ProviderError]) -> ProviderError:
        """The error to raise for ``exc`` (translated unless it is one already).

        The result carries this call's usage and output flag and is detached from ``exc``: raise
        it *after* the ``except`` block (``except Exception as exc: error = call.settle(...)``,
        then ``raise error``), so Python does not chain the SDK exception as its context.
        """
        error = exc if isinstance(exc, ProviderError) else translate(exc)
        if error.usage is None and self.usage is not None:
            error.usage = self.usage
        if self.output_started and not error.output_started:
            error.output_started = True
            error.details["output_started"] = True
        scrub_error(error)
        error.__cause__ = error.__context__ = None
        error.__suppress_context__ = True
        return error

    def _default_hint(self, cls: type[ProviderError]) -> str | None:
        if issubclass(cls, ProviderAuthError) and self.key is not None:
            return f"set a valid key in the {self.key.env_var} environment variable or the config key {self.key.path}"
        if issubclass(cls, ModelNotFoundError):
            return f"check the model name {self.model!r} (and base_url, if you set one)"
        if issubclass(cls, RequestTooLargeError):
            return "send less: shorten the transcript or attachments"
        if issubclass(cls, QuotaExceededError):
            return "add credits or raise the account's spend limit; waiting will not help"
        return None


# -- keys -----------------------------------------------------------------------------------


def find_api_key(
    setting: Secret | str | None, *, env_var: str, path: str, environ: Mapping[str, str] | None = None
) -> ApiKey | None:
    """The configured key, else the one in ``env_var``, else None. A key found is registered as
    a secret, so it is hidden wherever it is echoed back (keys from the environment are not
    otherwise known to the kernel)."""
    value = setting.reveal() if isinstance(setting, Secret) else setting
    if value:
        source = path
    else:
        value = (os.environ if environ is None else environ).get(env_var) or ""
        source = env_var
    if not value:
        return None
    register_secret(value)
    return ApiKey(value, source, env_var, path)


def require_api_key(
    setting: Secret | str | None,
    *,
    env_var: str,
    path: str,
    vendor: str,
    environ: Mapping[str, str] | None = None,
    error: type[ConfigError] | type[ProviderAuthError] = ConfigError,
    provider: str | None = None,
    model: str | None = None,
) -> ApiKey:
    """Like :func:`find_api_key`, but a missing key raises ``error`` naming the variable and
    the config key: a :class:`ConfigError` fails the kernel at start, a
    :class:`ProviderAuthError` fails only the runs that use the provider."""
    key = find_api_key(setting, env_var=env_var, path=path, environ=environ)
    if key is not None:
        return key
    message = f"no {vendor} API key: {env_var} is not set and the provider has no api_key"
    hint = f'export {env_var}=... or set api_key = "${{{env_var}}}" in the config ({path})'
    if issubclass(error, ConfigError):
        raise error(message, path=path, hint=hint)
    raise error(f"{message} ({path})", provider=provider, model=model, hint=hint)


_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie|signature", re.I)


def register_header_secrets(headers: Mapping[str, str]) -> None:
    """Register the values of configured headers whose names look secret (``api-key``,
    ``x-gateway-token``, ``authorization``...), so a server echoing them cannot leak them."""
    for name, value in headers.items():
        if _SECRET_HEADER.search(name):
            register_secret(value)


# -- clients --------------------------------------------------------------------------------

C = TypeVar("C")


class ClientCache(Generic[C]):
    """One SDK client per running event loop.

    An async HTTP client's connections belong to the loop that opened them: a provider used
    from a second loop (``asyncio.run`` twice, a sync wrapper) gets a client of its own instead
    of a pool from a dead loop.
    """

    def __init__(self, factory: Callable[[], C], close: Callable[[C], Awaitable[object]]) -> None:
        self._factory = factory
        self._close = close
        self._clients: dict[asyncio.AbstractEventLoop, C] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def get(self) -> C:
        """The running loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A closed loop's client cannot be closed any more; forget it.
            for dead in [other for other in self._clients if other.is_closed()]:
                del self._clients[dead]
            client = self._clients[loop] = self._factory()
        return client

    async def aclose(self) -> None:
        """Close every client: on this loop directly, on another running loop through it."""
        clients, self._clients = self._clients, {}
        here = asyncio.get_running_loop()
        for loop, client in clients.items():
            with contextlib.suppress(Exception):
                if loop is here:
                    await self._close(client)
                elif not loop.is_closed() and loop.is_running():
                    future = asyncio.run_coroutine_threadsafe(_awaited(self._close(client)), loop)
                    await asyncio.wrap_future(future)


async def _awaited(awaitable: Awaitable[object]) -> None:
    await awaitable


class ProviderBase(abc.ABC, Generic[C]):
    """What an SDK-backed provider has whatever its wire format: its name, config path and
    settings, an endpoint safe to name in messages, one client per loop, a repr without secrets.

    Subclasses set :attr:`default_url` (used when ``settings.base_url`` is unset), implement
    :meth:`make_client` and ``stream``, and declare ``capabilities`` and :attr:`models`. The
    settings need ``model``, and may have ``base_url`` and ``headers``.
    """

    #: the API's URL when the settings name none
    default_url: str = ""

    def __init__(self, settings: Any, *, name: str, path: str) -> None:
        self.settings = settings
        self.name = name
        self.path = path
        url = getattr(settings, "base_url", None) or self.default_url
        # Registered now, before the SDK can log a URL or a header with them.
        mask_url(url)
        register_header_secrets(getattr(settings, "headers", None) or {})
        #: the server, without credentials, for messages
        self.endpoint = public_url(url)
        self.clients: ClientCache[C] = ClientCache(self.make_client, close=self.close_client)
        self._models: tuple[ModelInfo, ...] = ()

    def __repr__(self) -> str:
        url = getattr(self.settings, "base_url", None) or self.default_url
        return safe_repr(type(self).__name__, name=self.name, model=self.default_model, base_url=url)

    @property
    def models(self) -> Sequence[ModelInfo]:
        return self._models

    @property
    def default_model(self) -> str:
        return str(self.settings.model)

    @abc.abstractmethod
    def make_client(self) -> C:
        """A new SDK client for the running loop (vendor SDKs are imported here, lazily)."""

    async def close_client(self, client: C) -> None:
        """Close one client; the official SDKs' clients have an async ``close()``."""
        closing: Any = client
        await closing.close()

    async def aclose(self) -> None:
        """Close every client this provider made."""
        await self.clients.aclose()


# -- time and transport ---------------------------------------------------------------------


class Deadline:
    """A response's total time budget, applied to each await with ``async with deadline():``.

    It never spans a ``yield``: time the consumer spends between events is not the provider's.
    On expiry the block raises the builtin :class:`TimeoutError`.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._at = asyncio.get_running_loop().time() + seconds if seconds else None

    def __call__(self) -> asyncio.Timeout:
        return asyncio.timeout_at(self._at)


def transport_error_class(exc: BaseException) -> type[ProviderError] | None:
    """:class:`ProviderTimeoutError` or :class:`ProviderConnectionError` for an exception of
    the HTTP library under the SDKs (httpx or its successor httpx2), else None.

    Recognised by class name and module, so the kernel imports no HTTP library.
    """
    names = {c.__name__ for c in type(exc).__mro__ if c.__module__.split(".")[0] in ("httpx", "httpx2")}
    if "TimeoutException" in names:
        return ProviderTimeoutError
    if "TransportError" in names:
        return ProviderConnectionError
    return None
