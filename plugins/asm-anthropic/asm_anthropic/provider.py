"""The Anthropic Messages API behind asm's normalized stream, on the official ``anthropic`` SDK.

The SDK is imported when a provider is constructed, never when the plugin is discovered. It
runs with ``max_retries=0``: the kernel owns retries. Raw stream events
(``messages.create(stream=True)``) are mapped one by one, so nothing is buffered beyond the
message being built and every failure is classified exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from asm_kernel.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ProviderAuthError,
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
from asm_kernel.model import (
    Capability,
    ContentBlock,
    Message,
    MessageDone,
    ModelInfo,
    ProviderRequest,
    RedactedThinkingBlock,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
    Usage,
    UsageUpdate,
)
from asm_kernel.resilience import parse_retry_after

from ._request import build_params
from .models import MODELS, catalog, model_info
from .settings import AnthropicSettings

__all__ = ["AnthropicProvider", "ENV_KEY", "map_status_error"]

log = logging.getLogger("asm.anthropic")

ENV_KEY = "ANTHROPIC_API_KEY"

# error.type in Anthropic's error bodies -> asm error class
_BY_TYPE: dict[str, type[ProviderError]] = {
    "invalid_request_error": InvalidRequestError,
    "authentication_error": ProviderAuthError,
    "permission_error": ProviderAuthError,
    "not_found_error": ModelNotFoundError,
    "request_too_large": RequestTooLargeError,
    "rate_limit_error": RateLimitError,
    "billing_error": QuotaExceededError,
    "api_error": ProviderServerError,
    "overloaded_error": ProviderOverloadedError,
    "timeout_error": ProviderTimeoutError,
}

# HTTP status -> asm error class (the status wins over error.type when there is one)
_BY_STATUS: dict[int, type[ProviderError]] = {
    400: InvalidRequestError,
    401: ProviderAuthError,
    402: QuotaExceededError,
    403: ProviderAuthError,
    404: ModelNotFoundError,
    408: ProviderTimeoutError,
    413: RequestTooLargeError,
    429: RateLimitError,
    500: ProviderServerError,
    502: ProviderServerError,
    503: ProviderServerError,
    504: ProviderTimeoutError,
    529: ProviderOverloadedError,
}

# 429s that waiting does not cure: spending limits
_QUOTA_CODES = frozenset({"contract_spend_limit_reached", "enforced_spend_limit_reached"})




def _body_field(body: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(body, Mapping):
            return None
        body = body.get(key)
    return body


def map_status_error(
    exc: Any,
    *,
    provider: str,
    model: str,
    output_started: bool,
    key_source: str,
    config_key: str = "providers[i].api_key",
    in_stream: bool = False,
) -> ProviderError:
    """An ``anthropic.APIStatusError`` (HTTP error or ``event: error`` in a stream) as an asm error."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    etype = getattr(exc, "type", None) or _body_field(body, "error", "type")
    text = getattr(exc, "api_message", None) or _body_field(body, "error", "message") or ""
    code = getattr(exc, "error_code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    request_id = getattr(exc, "request_id", None) or _body_field(body, "request_id")
    if in_stream or status == 200:
        cls = _BY_TYPE.get(str(etype), ProviderServerError)
        status_for_error = None
        where = "in the response stream"
    else:
        cls = _BY_STATUS.get(status or 0) or (
            ProviderServerError if (status or 0) >= 500 else _BY_TYPE.get(str(etype), InvalidRequestError)
        )
        status_for_error = status
        where = f"HTTP {status}"
    if cls is RateLimitError and code in _QUOTA_CODES:
        cls = QuotaExceededError
    label = f"{etype}" if etype else "error"
    message = f"Anthropic API error {where} ({label}): {text or 'no message'}"
    hint: str | None = None
    if cls is ProviderAuthError:
        message = f"Anthropic rejected the API key from {key_source} ({where}, {label}): {text or 'no message'}"
        hint = f"set a valid key in the {ENV_KEY} environment variable or the config key {config_key}"
    elif cls is ModelNotFoundError:
        hint = f"check the model name {model!r} (and base_url, if you set one)"
    elif cls is RequestTooLargeError:
        hint = "send less: shorten the transcript or attachments"
    elif cls is QuotaExceededError:
        hint = "check the billing and spend limits of the Anthropic account"
    return cls(
        message,
        provider=provider,
        model=model,
        status=status_for_error,
        retry_after=parse_retry_after(headers) if cls.retryable else None,
        output_started=output_started,
        request_id=request_id,
        hint=hint,
        error_type=str(etype) if etype else None,
    )


class _Builder:
    """Accumulates one streamed message from raw Messages API events."""

    def __init__(self, provider: str, model: str, limit_chars: int) -> None:
        self.provider = provider
        self.requested_model = model
        self.limit_chars = limit_chars
        self.blocks: dict[int, dict[str, Any]] = {}
        self.started = False
        self.stopped = False
        self.stop_reason: str | None = None
        self.response_id: str | None = None
        self.model: str | None = None
        self.usage = Usage()
        self.chars = 0

    def _error(self, message: str, output_started: bool) -> ProviderResponseError:
        return ProviderResponseError(
            message, provider=self.provider, model=self.requested_model, output_started=output_started,
            request_id=None, hint="the response was malformed; nothing partial is kept as an answer",
        )

    def _grow(self, n: int, output_started: bool) -> None:
        self.chars += n
        if self.chars > self.limit_chars:
            raise ProviderResponseError(
                f"the response exceeded max_response_chars ({self.limit_chars} characters); it was cut off",
                provider=self.provider, model=self.requested_model, output_started=output_started,
                hint="raise max_response_chars in the provider's config if such answers are expected",
            )

    @staticmethod
    def _usage(raw: Any, base: Usage) -> Usage:
        def pick(name: str, old: int) -> int:
            value = getattr(raw, name, None)
            return int(value) if isinstance(value, int) else old

        details = getattr(raw, "output_tokens_details", None)
        thinking = getattr(details, "thinking_tokens", None)
        return Usage(
            input_tokens=pick("input_tokens", base.input_tokens),
            output_tokens=pick("output_tokens", base.output_tokens),
            cache_creation_input_tokens=pick("cache_creation_input_tokens", base.cache_creation_input_tokens),
            cache_read_input_tokens=pick("cache_read_input_tokens", base.cache_read_input_tokens),
            reasoning_tokens=int(thinking) if isinstance(thinking, int) else base.reasoning_tokens,
        )

    def apply(self, event: Any, output_started: bool) -> list[StreamEvent]:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            if self.started:
                raise self._error("the stream sent message_start twice", output_started)
            self.started = True
            message = event.message
            self.response_id = getattr(message, "id", None)
            self.model = getattr(message, "model", None)
            self.usage = self._usage(getattr(message, "usage", None), Usage())
            return [UsageUpdate(self.usage)]
        if kind in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                    "message_stop") and not self.started:
            raise self._error(f"the stream sent {kind} before message_start", output_started)
        if self.stopped:
            raise self._error(f"the stream sent {kind} after message_stop", output_started)
        if kind == "content_block_start":
            index = int(event.index)
            if index in self.blocks:
                raise self._error(f"the stream started content block {index} twice", output_started)
            block = event.content_block
            btype = block.type
            if btype == "text":
                self.blocks[index] = {"type": "text", "text": ""}
                initial = getattr(block, "text", "") or ""
                if initial:
                    self.blocks[index]["text"] = initial
                    self._grow(len(initial), output_started)
                    return [TextDelta(initial, index)]
            elif btype == "tool_use":
                self.blocks[index] = {"type": "tool_use", "id": block.id, "name": block.name, "json": "",
                                      "input": getattr(block, "input", None) or {}}
            elif btype == "thinking":
                initial = getattr(block, "thinking", "") or ""
                self.blocks[index] = {"type": "thinking", "thinking": initial,
                                      "signature": getattr(block, "signature", "") or ""}
                if initial:
                    self._grow(len(initial), output_started)
                    return [ThinkingDelta(initial, index)]
            elif btype == "redacted_thinking":
                self.blocks[index] = {"type": "redacted_thinking", "data": block.data}
            else:
                log.warning("anthropic: ignoring content block of unsupported type %r", btype)
                self.blocks[index] = {"type": btype, "skip": True}
            return []
        if kind == "content_block_delta":
            index = int(event.index)
            block = self.blocks.get(index)
            if block is None or block.get("closed"):
                raise self._error(f"the stream sent a delta for content block {index}, which is not open",
                                  output_started)
            delta = event.delta
            dtype = delta.type
            if block.get("skip"):
                return []
            if dtype == "text_delta" and block["type"] == "text":
                block["text"] += delta.text
                self._grow(len(delta.text), output_started)
                return [TextDelta(delta.text, index)] if delta.text else []
            if dtype == "input_json_delta" and block["type"] == "tool_use":
                block["json"] += delta.partial_json
                self._grow(len(delta.partial_json), output_started)
                return []
            if dtype == "thinking_delta" and block["type"] == "thinking":
                block["thinking"] += delta.thinking
                self._grow(len(delta.thinking), output_started)
                return [ThinkingDelta(delta.thinking, index)] if delta.thinking else []
            if dtype == "signature_delta" and block["type"] == "thinking":
                block["signature"] += delta.signature
                return []
            if dtype == "citations_delta":
                return []
            raise self._error(f"the stream sent a {dtype} for a {block['type']} block", output_started)
        if kind == "content_block_stop":
            index = int(event.index)
            block = self.blocks.get(index)
            if block is None or block.get("closed"):
                raise self._error(f"the stream stopped content block {index}, which is not open", output_started)
            block["closed"] = True
            if block["type"] == "tool_use":
                raw = block["json"]
                if raw.strip():
                    try:
                        value = json.loads(raw)
                    except ValueError as exc:
                        raise ProviderResponseError(
                            f"tool_use block {block['id']} ({block['name']}) has invalid JSON input: {exc}",
                            provider=self.provider, model=self.requested_model, output_started=output_started,
                            hint="the model produced malformed tool arguments; the call was not made",
                        ) from None
                else:
                    value = dict(block["input"])
                if not isinstance(value, dict):
                    raise ProviderResponseError(
                        f"tool_use block {block['id']} ({block['name']}) input is a JSON "
                        f"{type(value).__name__}, not an object",
                        provider=self.provider, model=self.requested_model, output_started=output_started,
                    )
                block["input"] = value
            return []
        if kind == "message_delta":
            delta = event.delta
            reason = getattr(delta, "stop_reason", None)
            if reason:
                self.stop_reason = str(reason)
            usage = getattr(event, "usage", None)
            if usage is not None:
                self.usage = self._usage(usage, self.usage)
                return [UsageUpdate(self.usage)]
            return []
        if kind == "message_stop":
            self.stopped = True
            return []
        return []  # unknown event types are ignored, as the API's versioning policy asks

    def finish(self, output_started: bool) -> MessageDone:
        if not self.started:
            raise self._error("the stream ended before message_start: no message was received", output_started)
        if not self.stopped:
            raise self._error("the stream ended before message_stop: the response was truncated", output_started)
        open_blocks = [i for i, b in self.blocks.items() if not b.get("closed")]
        if open_blocks:
            raise self._error(f"content block(s) {open_blocks} were never stopped", output_started)
        if self.stop_reason is None:
            raise self._error("the stream ended without a stop_reason (no message_delta)", output_started)
        content: list[ContentBlock] = []
        for _, block in sorted(self.blocks.items()):
            btype = block["type"]
            if block.get("skip"):
                continue
            if btype == "text":
                if block["text"]:
                    content.append(TextBlock(block["text"]))
            elif btype == "tool_use":
                content.append(ToolUseBlock(block["id"], block["name"], block["input"]))
            elif btype == "thinking":
                content.append(ThinkingBlock(block["thinking"], block["signature"]))
            elif btype == "redacted_thinking":
                content.append(RedactedThinkingBlock(block["data"]))
        return MessageDone(
            Message("assistant", tuple(content)),
            stop_reason=self.stop_reason,
            model=self.model or self.requested_model,
            usage=self.usage,
            response_id=self.response_id,
        )


class AnthropicProvider:
    """Claude models through the Anthropic Messages API (``use = "anthropic"``)."""

    capabilities = frozenset(
        {
            Capability.STREAMING,
            Capability.TOOLS,
            Capability.VISION,
            Capability.REASONING,
            Capability.PROMPT_CACHE,
            Capability.CANCEL,
            Capability.SYSTEM_PROMPT,
            Capability.USAGE,
            Capability.JSON_SCHEMA,
        }
    )

    def __init__(
        self,
        settings: AnthropicSettings | None = None,
        *,
        name: str = "anthropic",
        path: str = "providers[0]",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        import anthropic  # the SDK: imported only when a provider is built

        self._sdk = anthropic
        self._transport_errors, self._timeout_errors = _http_errors()
        self.settings = settings or AnthropicSettings()
        self.name = name
        self._path = path
        self._environ = environ if environ is not None else os.environ
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._key: str | None = None
        self._key_source = ENV_KEY
        self._models = catalog(self.settings.model, self.settings.models)

    def __repr__(self) -> str:
        return (
            f"AnthropicProvider(name={self.name!r}, model={self.settings.model!r}, "
            f"base_url={self.settings.base_url!r})"
        )

    # -- declared ---------------------------------------------------------------------------

    @property
    def models(self) -> Sequence[ModelInfo]:
        return self._models

    @property
    def default_model(self) -> str:
        return self.settings.model

    def model_info(self, model: str) -> ModelInfo:
        return model_info(model, self.settings.models)

    # -- client -----------------------------------------------------------------------------

    def _client_or_raise(self, model: str) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None:
            if self._client_loop is loop:
                return self._client
            # An HTTP client belongs to the event loop that opened its connections; a provider
            # used from a new loop (asyncio.run twice) gets a fresh one.
            self._client = None
        settings = self.settings
        if settings.api_key is not None and settings.api_key.reveal():
            key, source = settings.api_key.reveal(), f"{self._path}.api_key"
        else:
            key, source = self._environ.get(ENV_KEY, ""), ENV_KEY
        if not key:
            raise ProviderAuthError(
                f"no Anthropic API key: set the {ENV_KEY} environment variable or the config key "
                f"{self._path}.api_key",
                provider=self.name,
                model=model,
                hint=f'e.g. export {ENV_KEY}=sk-ant-... or api_key = "${{{ENV_KEY}}}" in [[providers]]',
            )
        sdk = self._sdk
        timeout = sdk.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        self._client = sdk.AsyncAnthropic(
            api_key=key,
            base_url=settings.base_url or None,
            timeout=timeout,
            max_retries=0,
            default_headers=dict(settings.headers) or None,
        )
        self._client_loop = loop
        self._key, self._key_source = key, source
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- errors -----------------------------------------------------------------------------

    def _scrub(self, error: ProviderError) -> ProviderError:
        key = self._key
        if key and len(key) >= 4:
            for attr in ("message", "hint"):
                value = getattr(error, attr, None)
                if isinstance(value, str) and key in value:
                    setattr(error, attr, value.replace(key, "********"))
            error.args = (error._render(),)
        return error

    def _map(self, exc: BaseException, model: str, output_started: bool, in_stream: bool) -> ProviderError:
        sdk = self._sdk
        common: dict[str, Any] = {"provider": self.name, "model": model, "output_started": output_started}
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, sdk.APIStatusError):
            error = map_status_error(exc, key_source=self._key_source, config_key=f"{self._path}.api_key",
                                     in_stream=in_stream, **common)
        elif isinstance(exc, (sdk.APITimeoutError, *self._timeout_errors)):
            limit = self.settings.read_timeout if in_stream else self.settings.connect_timeout
            error = ProviderTimeoutError(
                f"Anthropic API timed out {'waiting for the next stream event' if in_stream else 'before responding'}"
                f" (connect_timeout {self.settings.connect_timeout} s, read_timeout {self.settings.read_timeout} s)",
                hint="raise read_timeout/connect_timeout in the provider's config if the network is slow",
                timeout=limit,
                **common,
            )
        elif isinstance(exc, TimeoutError):
            error = ProviderTimeoutError(
                f"Anthropic API response exceeded total_timeout ({self.settings.total_timeout} s)",
                hint="raise total_timeout in the provider's config for long answers",
                timeout=self.settings.total_timeout,
                **common,
            )
        elif isinstance(exc, (sdk.APIConnectionError, *self._transport_errors)):
            cause = exc.__cause__ if isinstance(exc, sdk.APIConnectionError) and exc.__cause__ else exc
            where = "mid-stream" if in_stream else "before a response"
            error = ProviderConnectionError(
                f"connection to the Anthropic API failed {where}: {type(cause).__name__}: {cause}",
                hint="check base_url and the network" if not in_stream else None,
                **common,
            )
        elif isinstance(exc, sdk.APIResponseValidationError | ValueError):
            error = ProviderResponseError(
                f"the Anthropic API sent a malformed stream: {type(exc).__name__}: {exc}",
                hint="nothing partial is kept as an answer",
                **common,
            )
        elif isinstance(exc, AttributeError | KeyError | TypeError | IndexError) and in_stream:
            error = ProviderResponseError(
                f"the Anthropic API sent a stream event of an unexpected shape: {type(exc).__name__}: {exc}",
                **common,
            )
        else:
            error = ProviderError(f"Anthropic request failed: {type(exc).__name__}: {exc}", **common)
        return self._scrub(error)

    # -- the stream -------------------------------------------------------------------------

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        settings = self.settings
        model = request.model or settings.model
        client = self._client_or_raise(model)
        known = model in MODELS or model in settings.models
        params = build_params(request, settings, model=model, provider=self.name,
                              max_output=self.model_info(model).max_output_tokens if known else None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.total_timeout if settings.total_timeout else None
        builder = _Builder(self.name, model, settings.max_response_chars)
        output_started = False
        in_stream = False
        sdk_stream: Any = None
        events = 0
        try:
            async with asyncio.timeout_at(deadline):
                sdk_stream = await client.messages.create(**params, stream=True)
            in_stream = True
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await sdk_stream.__anext__()
                except StopAsyncIteration:
                    break
                events += 1
                if events > settings.max_events:
                    raise ProviderResponseError(
                        f"the response exceeded max_events ({settings.max_events} stream events); it was cut off",
                        provider=self.name, model=model, output_started=output_started,
                        hint="raise max_events in the provider's config if such answers are expected",
                    )
                for item in builder.apply(event, output_started):
                    if isinstance(item, TextDelta | ThinkingDelta):
                        output_started = True
                    yield item
                if builder.stopped:
                    break
            done = builder.finish(output_started)
        except Exception as exc:
            raise self._map(exc, model, output_started, in_stream) from exc
        finally:
            if sdk_stream is not None:
                await sdk_stream.close()
        yield done


def _http_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(transport errors, timeout errors) of the HTTP library the SDK uses (httpx2 or httpx)."""
    transport: list[type[BaseException]] = []
    timeouts: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        transport.append(module.TransportError)
        timeouts.append(module.TimeoutException)
    return tuple(transport), tuple(timeouts)
