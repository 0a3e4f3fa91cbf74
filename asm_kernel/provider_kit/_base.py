"""What an SDK-backed provider has whatever its wire format: clients per loop, a deadline, a base class."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from ..model import ModelInfo
from ..secrets import mask_url
from ._keys import register_header_secrets
from ._text import public_url, safe_repr

__all__ = ["ClientCache", "ProviderBase", "Deadline"]

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

    Subclasses set :attr:`default_url` and :attr:`base_url_env`, implement :meth:`make_client`
    and ``stream``, and declare ``capabilities`` and :attr:`models`. The settings need
    ``model``, and may have ``base_url`` and ``headers``.
    """

    #: the API's URL when neither the settings nor :attr:`base_url_env` name one
    default_url: str = ""
    #: the environment variable the SDK reads when no base URL is passed (``OPENAI_BASE_URL``)
    base_url_env: str | None = None

    def __init__(self, settings: Any, *, name: str, path: str) -> None:
        self.settings = settings
        self.name = name
        self.path = path
        #: the URL requests go to (it may hold credentials: show it through :attr:`endpoint`)
        self.url: str = (
            getattr(settings, "base_url", None)
            or (os.environ.get(self.base_url_env) if self.base_url_env else None)
            or self.default_url
        )
        # Registered now, before the SDK can log a URL or a header with them.
        mask_url(self.url)
        register_header_secrets(getattr(settings, "headers", None) or {})
        #: the server, without credentials, for messages
        self.endpoint = public_url(self.url)
        self.clients: ClientCache[C] = ClientCache(self.make_client, close=self.close_client)
        self._models: tuple[ModelInfo, ...] = ()

    def __repr__(self) -> str:
        return safe_repr(type(self).__name__, name=self.name, model=self.default_model, base_url=self.url)

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
