"""The OpenAI provider: Responses API or Chat Completions over the official async SDK.

The ``openai`` SDK is imported when the first request is made (never at plugin discovery).
SDK retries are off (``max_retries=0``): the kernel owns retry policy. One HTTP stream per
``stream()`` call; closing the generator (or cancelling its task) closes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from asm_kernel.errors import ConfigError, ProviderTimeoutError
from asm_kernel.model import ModelInfo, ProviderRequest, StreamEvent, TextDelta, ThinkingDelta

from ._errors import ErrorContext, map_sdk_error
from ._requests import chat_params, check_capabilities, responses_params
from ._stream import ChatAccumulator, ResponsesAccumulator, plain
from .models import capabilities_for, is_openai, models_for
from .settings import OpenAISettings

__all__ = ["OpenAIProvider", "PLACEHOLDER_KEY", "resolve_api_key"]

#: Sent to a compatible server when no key is configured (the SDK and most servers want one).
PLACEHOLDER_KEY = "sk-no-key-required"


def resolve_api_key(settings: OpenAISettings, path: str, env: Any = None) -> str:
    """The key to send: config, else ``OPENAI_API_KEY``, else (compatible server only) a placeholder."""
    env = os.environ if env is None else env
    if settings.api_key is not None and settings.api_key.reveal():
        return settings.api_key.reveal()
    from_env = env.get("OPENAI_API_KEY")
    if from_env:
        return str(from_env)
    if not is_openai(settings):
        return PLACEHOLDER_KEY
    raise ConfigError(
        "no OpenAI API key: OPENAI_API_KEY is not set and the provider has no api_key",
        path=f"{path}.api_key",
        hint='export OPENAI_API_KEY=... or set api_key = "${OPENAI_API_KEY}" in the config',
    )


class OpenAIProvider:
    """``use = "openai"``: see :class:`~asm_openai.settings.OpenAISettings` for the settings."""

    def __init__(
        self,
        settings: OpenAISettings | None = None,
        *,
        name: str = "openai",
        path: str = "providers[0]",
        api_key: str | None = None,
    ) -> None:
        self.settings = settings or OpenAISettings()
        self.name = name
        self.path = path
        self._api_key = api_key if api_key is not None else resolve_api_key(self.settings, path)
        self._capabilities = capabilities_for(self.settings)
        self._models = models_for(self.settings)
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        where = self.settings.base_url or "api.openai.com"
        return (
            f"OpenAIProvider(name={self.name!r}, api={self.settings.api!r}, "
            f"model={self.settings.model!r}, base_url={where!r})"
        )

    # -- declared abilities -------------------------------------------------------------------

    @property
    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    @property
    def models(self) -> Sequence[ModelInfo]:
        return self._models

    @property
    def default_model(self) -> str:
        return self.settings.model

    # -- the SDK client -----------------------------------------------------------------------

    def _make_client(self) -> Any:
        import openai

        s = self.settings
        kwargs: dict[str, Any] = {
            "api_key": self._api_key,
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

    def _get_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client is bound to the loop it first ran on; a new loop (a new asyncio.run)
            # gets a new client rather than a connection pool from a dead loop.
            self._client = self._make_client()
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    # -- streaming ----------------------------------------------------------------------------

    def _context(self, model: str) -> ErrorContext:
        return ErrorContext(
            provider=self.name,
            model=model,
            key_path=f"{self.path}.api_key",
            secret=self._api_key if self._api_key != PLACEHOLDER_KEY else None,
            compatible=not is_openai(self.settings),
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamEvent]:
        """Stream one response: deltas and usage as they arrive, then exactly one MessageDone."""
        model = request.model or self.settings.model
        if model != request.model:
            from attrs import evolve

            request = evolve(request, model=model)
        check_capabilities(request, self._capabilities, provider=self.name)
        ctx = self._context(model)
        chat = self.settings.api == "chat"
        params = (
            chat_params(request, self.settings, self._capabilities)
            if chat
            else responses_params(request, self.settings)
        )
        accumulator: ChatAccumulator | ResponsesAccumulator = (
            ChatAccumulator(ctx) if chat else ResponsesAccumulator(ctx)
        )
        total = self.settings.total_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total if total is not None else None
        client = self._get_client()
        sdk_stream: Any = None
        try:
            async with self._deadline(ctx, deadline, loop):
                try:
                    if chat:
                        sdk_stream = await client.chat.completions.create(**params)
                    else:
                        sdk_stream = await client.responses.create(**params)
                except Exception as exc:
                    raise map_sdk_error(ctx, exc) from exc
            ctx.request_id = sdk_stream.response.headers.get("x-request-id")
            while True:
                async with self._deadline(ctx, deadline, loop):
                    try:
                        item = await sdk_stream.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        raise map_sdk_error(ctx, exc) from exc
                for event in accumulator.feed(plain(item)):
                    if isinstance(event, TextDelta | ThinkingDelta) and event.text:
                        ctx.output_started = True
                    yield event
            yield accumulator.finish()
        finally:
            if sdk_stream is not None:
                # Closing the response closes the HTTP stream at once (also on cancel/aclose).
                with contextlib.suppress(Exception):
                    await sdk_stream.close()
                iterator = getattr(sdk_stream, "_iterator", None)
                if iterator is not None:
                    with contextlib.suppress(Exception):
                        await iterator.aclose()

    @contextlib.asynccontextmanager
    async def _deadline(
        self, ctx: ErrorContext, deadline: float | None, loop: asyncio.AbstractEventLoop
    ) -> AsyncIterator[None]:
        """Bound one await by the request's ``total_timeout`` (never spanning a ``yield``)."""
        if deadline is None:
            yield
            return
        try:
            async with asyncio.timeout_at(deadline):
                yield
        except TimeoutError:
            raise ctx.make(
                ProviderTimeoutError,
                f"the response took longer than total_timeout ({self.settings.total_timeout} s)",
                hint=f"raise {self.path}.total_timeout for long answers",
            ) from None
