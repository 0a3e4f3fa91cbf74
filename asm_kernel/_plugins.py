"""Plugin discovery and isolation.

Plugins come from three places, in this order: the kernel's builtins, the ``asm`` entry-point
group of installed distributions, and user hook modules named in the config. A blocked name is
never imported. A plugin that fails to import or register is *quarantined*: it is left out,
reported by ``asm plugins`` with the reason, and every other plugin goes on working.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import pluggy
from attrs import define, field

from . import hookspecs
from ._hooktrace import trace_hooks
from .errors import DuplicateComponentError, PluginError, PluginLoadError
from .registry import KINDS, Register, Registry

__all__ = ["PluginInfo", "PluginManager", "BUILTIN_PLUGINS", "ENTRY_POINT_GROUP"]

log = logging.getLogger("asm.plugins")

ENTRY_POINT_GROUP = "asm"

#: The kernel's own plugins; registered exactly like installed ones.
BUILTIN_PLUGINS: dict[str, str] = {
    "builtin.memory": "asm_kernel.builtin.memory",
    "builtin.echo": "asm_kernel.builtin.echo",
    "builtin.scripted": "asm_kernel.builtin.scripted",
    "builtin.log": "asm_kernel.builtin.log",
    "builtin.routers": "asm_kernel.builtin.routers",
    "builtin.policies": "asm_kernel.builtin.policies",
}


_warned: set[tuple[str, str]] = set()
#: The (session, run) a lifecycle hook call concerns, for reports of a failing implementation.
_CONTEXT: contextvars.ContextVar[tuple[Any, Any]] = contextvars.ContextVar("asm_hook_context", default=(None, None))


def _warn_once(name: str, reason: str) -> None:
    """One warning per broken plugin and process (the CLI loads plugins more than once)."""
    if (name, reason) not in _warned:
        _warned.add((name, reason))
        log.warning("plugin %s quarantined: %s", name, reason)


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@define
class PluginInfo:
    """What ``asm plugins`` reports about one plugin."""

    name: str
    module: str
    source: str  # builtin | entrypoint | config | direct
    status: str = "loaded"  # loaded | quarantined | blocked
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    hooks: list[str] = field(factory=list)
    components: list[str] = field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "source": self.source,
            "status": self.status,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
            "hooks": list(self.hooks),
            "components": list(self.components),
        }


class PluginManager:
    """asm's pluggy manager plus discovery, switches, quarantine and the registries."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("asm")
        self.pm.add_hookspecs(hookspecs)
        self._solo: dict[tuple[str, int], Any] = {}
        if _env_flag("ASM_TRACE_HOOKS"):
            trace_hooks(self.pm)
        self.plugins: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}
        self._registered_components = False

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- loading ----------------------------------------------------------------------------

    def load(
        self,
        *,
        disabled: Sequence[str] = (),
        modules: Sequence[str] = (),
        autoload: bool | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        """Discover and register every plugin allowed by the switches.

        Environment switches win over arguments: ``ASM_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry
        points off, ``ASM_LOAD_PLUGINS=a,b`` keeps only those entry points, and
        ``ASM_DISABLED_PLUGINS=x,y`` blocks names in addition to ``disabled``.
        """
        blocked = set(disabled) | set(_env_list("ASM_DISABLED_PLUGINS") or [])
        if _env_flag("ASM_DISABLE_PLUGIN_AUTOLOAD"):
            autoload = False
        env_only = _env_list("ASM_LOAD_PLUGINS")
        if env_only is not None:
            only = env_only
            autoload = True if autoload is None else autoload
        for name in sorted(blocked):
            self.pm.set_blocked(name)

        for name, module in BUILTIN_PLUGINS.items():
            self._load_module(name, module, "builtin", blocked)
        if autoload is not False:
            self._load_entry_points(blocked, only)
        for module in modules:
            self._load_module(module, module, "config", blocked)

    def _load_entry_points(self, blocked: set[str], only: Sequence[str] | None) -> None:
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                ep.name,
                ep.value,
                "entrypoint",
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            if ep.name in blocked or (only is not None and ep.name not in only):
                info.status = "blocked"
                info.error = "disabled by configuration" if ep.name in blocked else "not in ASM_LOAD_PLUGINS"
                self.plugins[ep.name] = info
                continue
            self._register(info, ep.load)

    def _load_module(self, name: str, module: str, source: str, blocked: set[str]) -> None:
        info = PluginInfo(name, module, source)
        if name in blocked:
            info.status = "blocked"
            info.error = "disabled by configuration"
            self.plugins[name] = info
            return
        if source == "config":
            # User hook modules usually live next to the config file or the cwd.
            cwd = os.getcwd()
            if cwd not in sys.path:
                sys.path.insert(0, cwd)
        self._register(info, lambda: importlib.import_module(module))

    def _register(self, info: PluginInfo, load: Callable[[], Any]) -> Exception | None:
        """Register a plugin; returns why it was quarantined, or None."""
        self.plugins[info.name] = info
        obj: Any = None
        try:
            obj = load()
            self.pm.register(obj, name=info.name)
            self._check_impls(obj)
        except Exception as exc:  # a broken plugin must not take the others down
            if obj is not None and self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.status = "quarantined"
            info.error = f"{type(exc).__name__}: {exc}"
            _warn_once(info.name, info.error)
            return exc
        finally:
            self._solo.clear()
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(obj) or [])
        for caller in self.pm.get_hookcallers(obj) or []:
            if caller.name in hookspecs.NOTIFY_HOOKS:
                for impl in caller.get_hookimpls():
                    if impl.plugin is obj:
                        # pluggy types the attribute Final; the replacement is a transparent
                        # wrapper (same signature via __wrapped__), so dispatch is unchanged.
                        impl.function = self._isolated(caller.name, info.name, impl.function)  # type: ignore[misc]
        return None

    def _check_impls(self, obj: object) -> None:
        known = hookspecs.hook_names()
        for caller in self.pm.get_hookcallers(obj) or []:
            if caller.name.startswith("asm_") and caller.spec is None:
                close = difflib.get_close_matches(caller.name, known, n=1)
                raise PluginLoadError(
                    f"implements unknown hook {caller.name}",
                    hint=f"did you mean {close[0]}?" if close else "see docs/reference/hooks.md",
                )
            for impl in caller.get_hookimpls():
                if impl.plugin is not obj:
                    continue
                if impl.hookwrapper or impl.wrapper:
                    raise PluginLoadError(
                        f"implements {caller.name} as a hook wrapper, which asm does not support",
                        hint="asm calls each implementation on its own so one plugin cannot break another; "
                        "drop wrapper=True/hookwrapper=True (to wrap a run stage, use asm_configure_pipeline)",
                    )
                func = impl.function
                if (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)) and (
                    caller.name not in hookspecs.ASYNC_HOOKS
                ):
                    asyncs = ", ".join(sorted(hookspecs.ASYNC_HOOKS))
                    raise PluginLoadError(
                        f"implements {caller.name} with `async def`, but {caller.name} is called synchronously "
                        "(an async implementation would never run)",
                        hint=f"make it a plain def; hooks that may be async: {asyncs}",
                    )

    def _isolated(self, hook_name: str, plugin: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """``func`` such that an exception is reported through ``asm_on_error`` instead of raised."""

        @functools.wraps(func)
        def isolated(*args: Any) -> Any:
            try:
                return func(*args)
            except Exception as exc:
                log.exception("hook %s of plugin %s raised", hook_name, plugin)
                if hook_name != "asm_on_error":  # a failing error handler is only logged
                    self._report(exc, plugin, hook_name)
                return None

        return isolated

    def _report(self, exc: BaseException, plugin: str, hook_name: str) -> None:
        from .errors import AsmError

        if not isinstance(exc, AsmError):
            exc = PluginError(
                f"hook {hook_name} of plugin {plugin!r} raised {type(exc).__name__}: {exc}", plugin=plugin
            )
        session, run = _CONTEXT.get()
        failing = self.pm.get_plugin(plugin)
        # The failing plugin is not asked to handle its own failure.
        caller = self.pm.subset_hook_caller("asm_on_error", remove_plugins=[failing] if failing else [])
        caller(error=exc, session=session, run=run, during=f"hook:{hook_name}")

    def register_object(self, obj: object, name: str, source: str = "direct") -> None:
        """Register a plugin object directly (tests, embedding applications); refusal raises."""
        info = PluginInfo(name, getattr(obj, "__name__", type(obj).__name__), source)
        exc = self._register(info, lambda: obj)
        if exc is not None:
            message = exc.message if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
            raise PluginLoadError(
                f"plugin {name!r} could not be registered: {message}",
                hint=exc.hint if isinstance(exc, PluginError) else None,
                plugin=name,
            )

    # -- registries -------------------------------------------------------------------------

    def collect_components(self) -> dict[str, Registry]:
        """Call every ``asm_register_*`` hook once, each plugin with its own ``register``."""
        if self._registered_components:
            return self.registries
        self._registered_components = True
        for kind, hook_name in KINDS.items():
            registry = self.registries[kind]
            for impl in self.impls(hook_name):
                before = set(registry.names())
                try:
                    self._solo_caller(hook_name, impl.plugin)(register=Register(registry, impl.plugin_name))
                except DuplicateComponentError:
                    raise
                except Exception as exc:
                    self._quarantine(impl.plugin_name, exc)
                    continue
                info = self.plugins.get(impl.plugin_name)
                if info is not None:
                    info.components.extend(f"{kind}:{n}" for n in sorted(set(registry.names()) - before))
        return self.registries

    def _quarantine(self, name: str, exc: BaseException) -> None:
        info = self.plugins.get(name)
        if info is not None:
            info.status = "quarantined"
            info.error = f"{type(exc).__name__}: {exc}"
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for registry in self.registries.values():
            for spec in list(registry):
                if spec.plugin == name:
                    registry._specs.pop(spec.name, None)
        _warn_once(name, f"{type(exc).__name__}: {exc}")

    # -- calling hooks ----------------------------------------------------------------------

    def impls(self, hook_name: str) -> list[Any]:
        """Implementations in pluggy's call order (last registered first)."""
        return list(reversed(getattr(self.pm.hook, hook_name).get_hookimpls()))

    def notify(self, hook_name: str, *, context: tuple[Any, Any] = (None, None), **kwargs: Any) -> None:
        """Call a lifecycle hook through pluggy; an implementation that raises is reported to
        ``asm_on_error`` (with ``context``: the session and run it concerns) and the rest still run."""
        token = _CONTEXT.set(context)
        try:
            getattr(self.pm.hook, hook_name)(**kwargs)
        finally:
            _CONTEXT.reset(token)

    def _solo_caller(self, hook_name: str, plugin: object) -> Any:
        """A pluggy hook caller with ``plugin``'s implementation only (cached until plugins change)."""
        key = (hook_name, id(plugin))
        caller = self._solo.get(key)
        if caller is None:
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            caller = self._solo[key] = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
        return caller

    async def chain(self, hook_name: str, value_arg: str, **kwargs: Any) -> Any:
        """Call the implementations in order, each seeing the value the previous one returned.

        Each call goes through pluggy (tracing and monitoring see it); an ``async def``
        implementation is awaited before the next one runs. A non-asm exception becomes a
        :class:`PluginError` naming the plugin (decision hooks are not isolated: a policy that
        raises means to stop the run).
        """
        value = kwargs[value_arg]
        for impl in self.impls(hook_name):
            kwargs[value_arg] = value
            try:
                result = self._solo_caller(hook_name, impl.plugin)(**kwargs)
                if result and inspect.isawaitable(result[0]):
                    result = [await result[0]]
            except Exception as exc:
                from .errors import AsmError

                if isinstance(exc, AsmError):
                    raise
                raise PluginError(
                    f"hook {hook_name} of plugin {impl.plugin_name!r} raised {type(exc).__name__}: {exc}",
                    plugin=impl.plugin_name,
                ) from exc
            if result and result[0] is not None:
                value = result[0]
        return value

    def first(self, hook_name: str, **kwargs: Any) -> Any:
        """A ``firstresult`` hook's answer (None when no implementation answers)."""
        return getattr(self.pm.hook, hook_name)(**kwargs)

    def call_each(self, hook_name: str, make_kwargs: Callable[[str], dict[str, Any]]) -> list[tuple[str, Any]]:
        """Call every implementation on its own, through pluggy, with arguments made for its plugin.

        Returns ``(plugin name, exception or None)`` per implementation, in call order; the
        register family uses it so each plugin gets a ``register`` that remembers who it is.
        """
        outcome: list[tuple[str, Any]] = []
        for impl in self.impls(hook_name):
            try:
                self._solo_caller(hook_name, impl.plugin)(**make_kwargs(impl.plugin_name))
            except Exception as exc:
                outcome.append((impl.plugin_name, exc))
            else:
                outcome.append((impl.plugin_name, None))
        return outcome

    def info(self) -> list[PluginInfo]:
        return sorted(self.plugins.values(), key=lambda p: (p.source != "builtin", p.name))
