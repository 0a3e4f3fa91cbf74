"""The Kernel: assembles components from config and plugins, and owns their lifecycle.

>>> async with Kernel.open() as kernel:              # doctest: +SKIP
...     result = await kernel.run_once("hello")
...     print(result.output)
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from attrs import frozen

from ._plugins import PluginManager
from .config import ComponentConfig, Config, config_from_dict, load_config, validate_settings
from .cost import CostReport
from .errors import AsmError, ConfigError, PluginError, UnknownComponentError
from .interfaces import Policy, Provider, Router, Store, TelemetrySink, Tool, ToolSource
from .leases import LeaseKeeper
from .model import Event, RunResult
from .pipeline import Pipeline
from .registry import Registry, install_hint
from .resilience import BreakerBoard

__all__ = ["Kernel", "BuildContext", "default_worker_id"]

log = logging.getLogger("asm.kernel")


def default_worker_id() -> str:
    """``host:pid:random``: unique per kernel, readable in a run's ``owner``."""
    import secrets
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@frozen
class BuildContext:
    """Handed to every component factory (see :class:`asm_kernel.interfaces.ComponentContext`)."""

    name: str
    path: str
    home: Path
    config_dir: Path
    kernel: Kernel | None = None
    #: Built for a short-lived command (the ``asm`` CLI) rather than a long-running process.
    short_lived: bool = False


class Kernel:
    """A running asm system: plugins, store, providers, tools, policies, telemetry, sessions.

    Build one with :meth:`open` (reads the config) or the constructor, then use it as an async
    context manager so the store is opened and closed. Components can also be handed in as
    objects (``store=``, ``providers=``, ``plugins=``), which tests and embedding apps prefer; a
    store handed in is opened by the kernel but belongs to the caller, who closes it (so several
    kernels — workers — can share one).
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any] | None = None,
        *,
        store: Store | None = None,
        providers: Mapping[str, Provider] | None = None,
        tools: Sequence[Tool | ToolSource | Callable[..., Any]] = (),
        plugins: Sequence[object] = (),
        load_plugins: bool = True,
        short_lived: bool = False,
    ) -> None:
        if config is None:
            config = Config()
        elif isinstance(config, Mapping):
            config = config_from_dict(config)
        self.config: Config = config
        self.short_lived = short_lived
        self.plugins = PluginManager()
        if load_plugins:
            self.plugins.load(
                disabled=config.plugins.disabled,
                modules=config.plugins.modules,
                autoload=config.plugins.autoload,
            )
        for i, plugin in enumerate(plugins):
            self.plugins.register_object(plugin, getattr(plugin, "__name__", f"direct-{i}"))
        self._given_store = store
        self._given_providers = dict(providers or {})
        self._given_tools = list(tools)
        self.store: Store = store  # type: ignore[assignment]  # set in start()
        self.providers: dict[str, Provider] = {}
        from .tools.sources import ToolSet

        #: Every tool by the name the model calls it, and the sources that listed some of them.
        self.toolset = ToolSet()
        self.tools: dict[str, Tool] = self.toolset.tools
        self.policies: list[Policy] = []
        self.telemetry: list[TelemetrySink] = []
        self.router: Router | None = None
        self.breakers: BreakerBoard = BreakerBoard(config.resilience)
        self._started = False
        #: This process's id as the owner of the runs it executes (their leases).
        self.worker_id: str = config.runtime.worker_id or default_worker_id()
        self.pipeline = Pipeline()
        from .approvals import Approvals
        from .runtime.supervisor import Supervisor
        from .sessions import SessionManager

        self.leases = LeaseKeeper(self)
        self.sessions = SessionManager(self)
        self.runtime = Supervisor(self)
        #: Deciding what runs wait for (see :mod:`asm_kernel.approvals`).
        self.approvals = Approvals(self)

    def __repr__(self) -> str:
        return (
            f"Kernel(store={type(self.store).__name__ if self.store else None}, "
            f"providers={sorted(self.providers)}, started={self._started})"
        )

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        config: str | os.PathLike[str] | Config | Mapping[str, Any] | None = None,
        *,
        overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Kernel:
        """A kernel for ``config`` (a path, a Config, a dict, or None to discover the file).

        Use it with ``async with``; the store opens on entry and closes on exit.
        """
        if isinstance(config, Config):
            cfg = config
        elif isinstance(config, Mapping):
            cfg = config_from_dict(config, overrides=overrides)
        else:
            cfg = load_config(config, overrides=overrides)
        return cls(cfg, **kwargs)

    @property
    def registries(self) -> dict[str, Registry]:
        return self.plugins.collect_components()

    def _context(self, component: ComponentConfig) -> BuildContext:
        return BuildContext(
            name=component.name,
            path=component.path,
            home=self.config.home,
            config_dir=self.config.config_dir,
            kernel=self,
            short_lived=self.short_lived,
        )

    def build(self, kind: str, component: ComponentConfig) -> Any:
        """Build one configured component through its registered factory."""
        spec = self.registries[kind].get(component.use, path=f"{component.path}.use")
        settings = (
            validate_settings(spec.settings, component.settings, component.path)
            if spec.settings is not None
            else dict(component.settings)
        )
        try:
            return spec.factory(settings, self._context(component))
        except AsmError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"{kind} {component.use!r} (plugin {spec.plugin!r}) failed to build: {type(exc).__name__}: {exc}",
                path=component.path,
            ) from exc

    def default_store_config(self) -> ComponentConfig:
        """The ``[store]`` a config without one gets: the ``asm_default_store`` hook's answer."""
        self.registries  # noqa: B018  (plugins register their stores before they are asked)
        name = self.plugins.first("asm_default_store", kernel=self) or "memory"
        return ComponentConfig(name, name, {}, "store")

    def _build_all(self) -> None:
        cfg = self.config
        if self._given_store is not None:
            self.store = self._given_store
        else:
            self.store = self.build("store", cfg.store or self.default_store_config())
            if cfg.store is None and not self.store.capabilities.durable:
                warnings.warn(
                    f"no durable store is installed, so sessions are kept in memory ({type(self.store).__name__}) "
                    f"and lost on exit; install one ({install_hint('asm-duckdb')}) or configure [store]",
                    stacklevel=3,
                )
        providers = cfg.providers
        if not providers and not self._given_providers:
            providers = (ComponentConfig("echo", "echo", {}, "providers[0]"),)
        for component in providers:
            if component.name not in self._given_providers:
                self.providers[component.name] = self.build("provider", component)
        self.providers.update(self._given_providers)
        for provider_name, provider in self.providers.items():
            if not hasattr(provider, "name"):
                raise ConfigError(f"provider {provider_name!r} has no `name` attribute")
        if cfg.run.provider is not None and cfg.run.provider not in self.providers:
            raise UnknownComponentError(
                f"run.provider names {cfg.run.provider!r}, which is not configured",
                path="run.provider",
                hint=f"configured providers: {', '.join(sorted(self.providers))}",
            )
        # Tools are dispatched by the name the model calls them by: their spec's name. Sources
        # (an MCP server) are opened in start(), where their tools are listed and added.
        from .tools.sources import ToolSet

        self.toolset = ToolSet()
        self.tools = self.toolset.tools
        for component in cfg.tools:
            tool = self.build("tool", component)
            self._add_tool(tool, component.path)
        for i, tool in enumerate(self._given_tools):
            self._add_tool(tool, f"tools[{i}]")
        self.policies = [self.build("policy", c) for c in cfg.policies]
        self.telemetry = [self.build("telemetry", c) for c in cfg.telemetry]
        self.breakers = BreakerBoard(cfg.resilience)
        if cfg.router is not None:
            self.router = self.build("router", cfg.router)
        else:
            # No [router]: the capability router, preferring [run] provider, then config order.
            prefer = ([cfg.run.provider] if cfg.run.provider else []) + [
                n for n in self.providers if n != cfg.run.provider
            ]
            self.router = self.build(
                "router", ComponentConfig("capability", "capability", {"prefer": prefer}, "router")
            )

    def _add_tool(self, tool: Any, path: str) -> None:
        """A tool, a plain function (made a FunctionTool) or a tool source (opened by start())."""
        self.toolset.add(tool, path)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Kernel:
        if self._started:
            return self
        self._build_all()
        self.pipeline = self._build_pipeline()
        await self.store.open()
        try:
            await self.toolset.open()
        except BaseException:
            if self._given_store is None:
                await self.store.close()
            raise
        self._started = True
        self.plugins.notify("asm_kernel_started", kernel=self)
        return self

    def _build_pipeline(self) -> Pipeline:
        from .resume import install

        pipeline = Pipeline()
        install(pipeline)  # continuing runs that waited for approval: the lifecycle's, not a plugin's
        for plugin, exc in self.plugins.call_each(
            "asm_configure_pipeline", lambda plugin: {"pipeline": pipeline, "kernel": self}
        ):
            if exc is not None:
                if isinstance(exc, AsmError):
                    exc.details.setdefault("plugin", plugin)
                    raise exc
                raise PluginError(
                    f"plugin {plugin!r} failed to configure the run pipeline: {type(exc).__name__}: {exc}",
                    plugin=plugin,
                ) from exc
        return pipeline

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.runtime.shutdown()
        await self.sessions.closer.close()
        await self.leases.close()
        self.plugins.notify("asm_kernel_stopping", kernel=self)
        await self.toolset.close()
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception:  # closing one provider must not keep the store open
                log.exception("closing provider %s failed", getattr(provider, "name", "?"))
        for sink in self.telemetry:
            try:
                sink.close()
            except Exception:
                log.exception("closing telemetry sink failed")
        if self._given_store is None:
            await self.store.close()

    async def __aenter__(self) -> Kernel:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- event fan-out ----------------------------------------------------------------------

    def published(self, events: Sequence[Event]) -> None:
        """Called after events are stored: telemetry sinks, then ``asm_event_appended`` hooks."""
        for event in events:
            for sink in self.telemetry:
                try:
                    sink.emit(event)
                except Exception:
                    log.exception("telemetry sink %r failed on event %s", sink, event.id)
            self.plugins.notify("asm_event_appended", event=event)

    # -- conveniences -----------------------------------------------------------------------

    async def run_once(self, prompt: Any, **kwargs: Any) -> RunResult:
        """Create a session if needed and run ``prompt`` in it; see :meth:`SessionManager.run_once`."""
        return await self.sessions.run_once(prompt, **kwargs)

    async def run(self, session_id: str, prompt: Any, **kwargs: Any) -> RunResult:
        return await self.sessions.run(session_id, prompt, **kwargs)

    def stream_run(self, session_id: str, prompt: Any, **kwargs: Any) -> AsyncIterator[Event | RunResult]:
        return self.sessions.stream_run(session_id, prompt, **kwargs)

    async def cost(self, *, by: str = "model", since: Any = None, until: Any = None) -> CostReport:
        """Tokens and cost from the log, grouped ``by`` session, agent, provider, model or day.

        ``since``/``until``: datetimes, ISO strings or spans back from now (``"7d"``). Unknown
        prices are reported as unknown, never as zero. See :mod:`asm_kernel.cost`.
        """
        from .cost import cost_report

        return await cost_report(self, by=by, since=since, until=until)
