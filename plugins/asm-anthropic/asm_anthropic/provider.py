"""The Anthropic Messages API behind asm's normalized stream, on the official ``anthropic`` SDK.

The SDK is imported when a provider is constructed, never when the plugin is discovered. It
runs with ``max_retries=0``: the kernel owns retries. The key is looked up when the first
request is made, so a missing key fails the runs that use this provider, not the kernel.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from asm_kernel.context.tokens import TokenEstimator
from asm_kernel.errors import ProviderAuthError, ProviderError, ProviderResponseError
from asm_kernel.model import ModelInfo, ProviderRequest, StreamEvent, TextDelta, ThinkingDelta
from asm_kernel.provider_kit import ApiKey, Deadline, ProviderBase, ProviderCall, require_api_key

from ._builder import MessageBuilder
from ._errors import translate
from ._request import build_params
from .models import CAPABILITIES, MODELS, catalog, model_info
from .settings import AnthropicSettings

__all__ = ["AnthropicProvider", "ENV_KEY", "ESTIMATOR"]

ENV_KEY = "ANTHROPIC_API_KEY"

#: How asm estimates Claude's tokens before a request is sent. Calibrated on the recorded corpus
#: (docs/guides/context.md) against Anthropic's published tokenizer, then made about a quarter more
#: generous, since current Claude models' tokenizer gives more tokens than that one: 3.2 characters a
#: token, a non-ASCII byte 2.5 characters, a digit or punctuation mark 1.5 more, 1,600 tokens an image
#: (a 1.15-megapixel image, the size the API scales larger ones down to), the tool-use preamble per
#: tool. It errs high; ``count_tokens`` is exact.
ESTIMATOR = TokenEstimator(
    "anthropic", chars_per_token=3.2, message_overhead=5, image_tokens=1_600, request_overhead=10, tool_overhead=60,
    extra_weight=2.5, punct_weight=1.5,
)


class AnthropicProvider(ProviderBase[Any]):
    """Claude models through the Anthropic Messages API (``use = "anthropic"``)."""

    capabilities = CAPABILITIES
    default_url = "https://api.anthropic.com"
    base_url_env = "ANTHROPIC_BASE_URL"
    settings: AnthropicSettings

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
        super().__init__(settings or AnthropicSettings(), name=name, path=path)
        self._environ = environ if environ is not None else os.environ
        self._key: ApiKey | None = None
        self._models = catalog(self.settings.model, self.settings.models)

    def model_info(self, model: str) -> ModelInfo:
        return model_info(model, self.settings.models)

    def token_estimator(self, model: str) -> TokenEstimator:
        """The estimator asm uses for Claude models before a request's size is known."""
        return ESTIMATOR

    async def count_tokens(self, request: ProviderRequest) -> int:
        """The exact input tokens of ``request`` (``POST /v1/messages/count_tokens``; free, no output).

        The optional ``Provider.count_tokens`` capability: the kernel asks it when its estimate
        says a window does not fit. Errors are the same typed errors as :meth:`stream`'s.
        """
        settings = self.settings
        model = request.model or settings.model
        call = ProviderCall(self.name, model, vendor="the Anthropic API", key=self._api_key(model))
        client = self.clients.get()
        params = build_params(request, settings, model=model, provider=self.name)
        body = {k: params[k] for k in ("model", "messages", "system", "tools", "thinking", "output_config")
                if k in params}
        error: ProviderError | None = None
        try:
            async with Deadline(settings.total_timeout)():
                counted = await client.messages.count_tokens(**body)
            tokens = int(counted.input_tokens)
        except Exception as exc:
            error = call.settle(exc, lambda e: self._translate(call, e, False))
        if error is not None:
            raise error
        return tokens

    # -- client -----------------------------------------------------------------------------

    def _api_key(self, model: str) -> ApiKey:
        if self._key is None:
            self._key = require_api_key(
                self.settings.api_key,
                env_var=ENV_KEY,
                path=f"{self.path}.api_key",
                vendor="Anthropic",
                environ=self._environ,
                error=ProviderAuthError,
                provider=self.name,
                model=model,
            )
        return self._key

    def make_client(self) -> Any:
        settings, sdk = self.settings, self._sdk
        timeout = sdk.Timeout(
            connect=settings.connect_timeout,
            read=settings.read_timeout,
            write=settings.read_timeout,
            pool=settings.connect_timeout,
        )
        assert self._key is not None, "the key is looked up before the first client is made"
        return sdk.AsyncAnthropic(
            api_key=self._key.value,
            base_url=settings.base_url or None,
            timeout=timeout,
            max_retries=0,
            default_headers=dict(settings.headers) or None,
        )

    # -- the stream -------------------------------------------------------------------------

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        """Stream one response: deltas and usage as they arrive, then exactly one MessageDone."""
        settings = self.settings
        model = request.model or settings.model
        call = ProviderCall(self.name, model, vendor="the Anthropic API", key=self._api_key(model))
        client = self.clients.get()
        known = model in MODELS or model in settings.models
        params = build_params(
            request,
            settings,
            model=model,
            provider=self.name,
            max_output=self.model_info(model).max_output_tokens if known else None,
        )
        deadline = Deadline(settings.total_timeout)
        builder = MessageBuilder(call, settings.max_response_chars)
        in_stream = False
        sdk_stream: Any = None
        events = 0
        error: ProviderError | None = None
        try:
            async with deadline():
                sdk_stream = await client.messages.create(**params, stream=True)
            in_stream = True
            while not builder.stopped:
                try:
                    async with deadline():
                        event = await sdk_stream.__anext__()
                except StopAsyncIteration:
                    break
                events += 1
                if events > settings.max_events:
                    raise call.error(
                        ProviderResponseError,
                        f"the response exceeded max_events ({settings.max_events} stream events); it was cut off",
                        hint="raise max_events in the provider's config if such answers are expected",
                    )
                for item in builder.apply(event):
                    if isinstance(item, TextDelta | ThinkingDelta):
                        call.output_started = True
                    yield item
            done = builder.finish()
        except Exception as exc:
            error = call.settle(exc, lambda e: self._translate(call, e, in_stream))
        finally:
            if sdk_stream is not None:
                await sdk_stream.close()
        if error is not None:
            raise error  # outside the handler: the SDK exception is not chained to it
        yield done

    def _translate(self, call: ProviderCall, exc: BaseException, in_stream: bool) -> ProviderError:
        s = self.settings
        return translate(
            call,
            exc,
            sdk=self._sdk,
            in_stream=in_stream,
            endpoint=self.endpoint,
            timeouts=(s.connect_timeout, s.read_timeout, s.total_timeout),
        )
