"""The one HTTP-status → asm-error map, and the typed, scrubbed errors of one provider call."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from attrs import define

from ..errors import (
    ContextLengthError,
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
from ..model import Usage
from ..resilience import parse_retry_after
from ._keys import ApiKey
from ._text import scrub_error

__all__ = ["STATUS_ERRORS", "error_class", "ProviderCall", "transport_error_class", "context_length"]

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
_REFINES_400 = frozenset({RequestTooLargeError, ContextLengthError, ModelNotFoundError, QuotaExceededError})

# How providers say a prompt is over the model's window, with the numbers they give.
_CONTEXT_MESSAGES = (
    # Anthropic: "prompt is too long: 208656 tokens > 200000 maximum"
    (re.compile(r"prompt is too long: (?P<prompt>\d+) tokens > (?P<limit>\d+) maximum"), None),
    # Anthropic: "input length and `max_tokens` exceed context limit: 188240 + 21333 > 200000"
    (re.compile(r"exceed context limit: (?P<prompt>\d+) \+ (?P<output>\d+) > (?P<limit>\d+)"), None),
    # OpenAI: "maximum context length is 8192 tokens. However, your messages resulted in 8227 tokens"
    (re.compile(r"maximum context length is (?P<limit>\d+) tokens\. However, your messages resulted in "
                r"(?P<prompt>\d+) tokens"), None),
    # OpenAI: "... you requested 4120 tokens (3120 in the messages, 1000 in the completion)"
    (re.compile(r"maximum context length is (?P<limit>\d+) tokens\. However, you requested \d+ tokens "
                r"\((?P<prompt>\d+) in the messages, (?P<output>\d+) in the completion\)"), None),
    # OpenAI Responses: "Your input exceeds the context window of this model."
    (re.compile(r"input exceeds the context window"), None),
)


def context_length(message: str | None) -> dict[str, int] | None:
    """The numbers of a provider's "prompt over the context window" message, or None if it is not one.

    Keys, when the message gives them: ``prompt_tokens``, ``limit_tokens``, ``output_tokens``.
    An empty dict means it is one, without numbers.
    """
    if not message:
        return None
    for pattern, _ in _CONTEXT_MESSAGES:
        match = pattern.search(message)
        if match is not None:
            found = match.groupdict()
            names = {"prompt": "prompt_tokens", "limit": "limit_tokens", "output": "output_tokens"}
            return {names[k]: int(v) for k, v in found.items() if v is not None}
    return None


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
        if issubclass(cls, ContextLengthError):
            return "the prompt is over the model's context window: asm compacts once and retries; see [context]"
        if issubclass(cls, RequestTooLargeError):
            return "send less: shorten the transcript or attachments"
        if issubclass(cls, QuotaExceededError):
            return "add credits or raise the account's spend limit; waiting will not help"
        return None


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
