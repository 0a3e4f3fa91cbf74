"""The OpenAI provider: Responses API or Chat Completions over the official async SDK.

The ``openai`` SDK is imported when the first request is made (never at plugin discovery).
SDK retries are off (``max_retries=0``): the kernel owns retry policy. One HTTP stream per
``stream()`` call, read through ``with_streaming_response`` (see :mod:`asm_openai._stream` for
why); closing the generator (or cancelling its task) closes the stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from asm_kernel.context.tokens import TokenEstimator
from asm_kernel.errors import ProviderError, ProviderTimeoutError
from asm_kernel.model import ProviderRequest, StreamEvent, TextDelta, ThinkingDelta
from asm_kernel.provider_kit import (
    ApiKey,
    Deadline,
    ProviderBase,
    ProviderCall,
    find_api_key,
    require_api_key,
    safe_repr,
)

from ._chat import ChatAccumulator
from ._errors import translate
from ._requests import chat_params, check_capabilities, responses_params
from ._responses import ResponsesAccumulator
from ._stream import iter_sse
from .models import capabilities_for, is_openai, models_for
from .settings import OpenAISettings

__all__ = ["OpenAIProvider", "ENV_KEY", "PLACEHOLDER_KEY", "resolve_api_key", "ESTIMATOR"]

#: How asm estimates OpenAI tokens before a request is sent, calibrated on the recorded corpus
#: against o200k_base in the chat format (docs/guides/context.md): 3.6 characters a token, a non-ASCII
#: byte one character more, a digit or punctuation mark 1.5 more, 4 tokens a message (the chat
#: framing), 3 a request (reply priming), 765 an image (1024x1024 at high detail). It errs high.
ESTIMATOR = TokenEstimator(
    "openai", chars_per_token=3.6, message_overhead=4, image_tokens=765, request_overhead=3, tool_overhead=12,
    extra_weight=1.0, punct_weight=1.5,
)

ENV_KEY = "OPENAI_API_KEY"
#: Sent to a compatible server when no key is configured (the SDK and most servers want one).
PLACEHOLDER_KEY = "sk-no-key-required"


def _find_key(settings: OpenAISettings, path: str, env: Mapping[str, str] | None) -> ApiKey | None:
    """The key to send; None means the placeholder (a compatible server, no key anywhere)."""
    found = find_api_key(settings.api_key, env_var=ENV_KEY, path=f"{path}.api_key", environ=env)
    if found is None and is_openai(settings):
        found = require_api_key(None, env_var=ENV_KEY, path=f"{path}.api_key", vendor="OpenAI", environ=env)
    return found


def resolve_api_key(settings: OpenAISettings, path: str, env: Mapping[str, str] | None = None) -> str:
    """The key to send: config, else ``OPENAI_API_KEY``, else (compatible server only) a placeholder.

    Against OpenAI a missing key is a :class:`~asm_kernel.errors.ConfigError` naming both.
    """
    found = _find_key(settings, path, env)
    return found.value if found is not None else PLACEHOLDER_KEY


class OpenAIProvider(ProviderBase[Any]):
    """``use = "openai"``: see :class:`~asm_openai.settings.OpenAISettings` for the settings."""

    default_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    settings: OpenAISettings

    def __init__(
        self,
        settings: OpenAISettings | None = None,
        *,
        name: str = "openai",
        path: str = "providers[0]",
        api_key: str | None = None,
    ) -> None:
        super().__init__(settings or OpenAISettings(), name=name, path=path)
        s = self.settings
        self._key = (
            find_api_key(api_key, env_var=ENV_KEY, path=f"{path}.api_key")
            if api_key is not None
            else _find_key(s, path, None)
        )
        self._vendor = "OpenAI" if is_openai(s) else "the OpenAI-compatible server"
        self._capabilities = capabilities_for(s)
        self._models = models_for(s)

    def __repr__(self) -> str:
        s = self.settings
        return safe_repr("OpenAIProvider", name=self.name, api=s.api, model=s.model, base_url=self.url)

    @property
    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    def token_estimator(self, model: str) -> TokenEstimator:
        """The estimator asm uses for this provider's models before a request's size is known."""
        return ESTIMATOR

    def make_client(self) -> Any:
        import openai

        s = self.settings
        kwargs: dict[str, Any] = {
            "api_key": self._key.value if self._key is not None else PLACEHOLDER_KEY,
            "max_retries": 0,  # the kernel owns retries
            "timeout": openai.Timeout(s.read_timeout, connect=s.connect_timeout),
            "default_headers": dict(s.headers) or None,
        }
        if s.base_url is not None:
            kwargs["base_url"] = s.base_url
        if s.organization is not None:
            kwargs["organization"] = s.organization
        if s.project is not None:
            kwargs["project"] = s.project
        return openai.AsyncOpenAI(**kwargs)

    # -- streaming ----------------------------------------------------------------------------

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        """Stream one response: deltas and usage as they arrive, then exactly one MessageDone."""
        model = request.model or self.settings.model
        if model != request.model:
            from attrs import evolve

            request = evolve(request, model=model)
        check_capabilities(request, self._capabilities, provider=self.name)
        call = ProviderCall(self.name, model, vendor=self._vendor, key=self._key)
        chat = self.settings.api == "chat"
        accumulator: ChatAccumulator | ResponsesAccumulator
        if chat:
            params = chat_params(request, self.settings, self._capabilities)
            accumulator = ChatAccumulator(call)
        else:
            params = responses_params(request, self.settings)
            accumulator = ResponsesAccumulator(call)
        deadline = Deadline(self.settings.total_timeout)
        client = self.clients.get()
        resource = client.chat.completions if chat else client.responses
        opening = resource.with_streaming_response.create(**params)
        response: Any = None
        events: AsyncGenerator[tuple[str | None, str], None] | None = None
        error: ProviderError | None = None
        try:
            async with deadline():
                response = await opening.__aenter__()
            call.request_id = response.headers.get("x-request-id")
            events = iter_sse(response.iter_lines())
            while True:
                async with deadline():
                    item = await anext(events, None)
                if item is None:
                    break
                for event in accumulator.feed(*item):
                    if isinstance(event, TextDelta | ThinkingDelta) and event.text:
                        call.output_started = True
                    yield event
            done = accumulator.finish()
        except Exception as exc:
            error = call.settle(exc, lambda e: self._translate(call, e))
        finally:
            # Closing the response closes the HTTP stream at once (also on cancel/aclose).
            if events is not None:
                with contextlib.suppress(Exception):
                    await events.aclose()
            if response is not None:
                with contextlib.suppress(Exception):
                    await opening.__aexit__(None, None, None)
        if error is not None:
            raise error  # outside the handler: the SDK exception is not chained to it
        yield done

    def _translate(self, call: ProviderCall, exc: BaseException) -> ProviderError:
        if type(exc) is TimeoutError:  # the Deadline's, not the HTTP library's
            return call.error(
                ProviderTimeoutError,
                f"the response took longer than total_timeout ({self.settings.total_timeout} s)",
                hint=f"raise {self.path}.total_timeout for long answers",
            )
        return translate(call, exc, endpoint=self.endpoint)
