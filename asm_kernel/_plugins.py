"""Plugin discovery and isolation.

Plugins come from three places, in this order: the kernel's builtins, the ``asm`` entry-point
group of installed distributions, and user hook modules named in the config. A blocked name is
never imported. A plugin that fails to import or register is *quarantined*: it is left out,
reported by ``asm plugins`` with the reason, and every other plugin goes on working.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import pluggy
from attrs import define, field

from . import hookspecs
from .errors import DuplicateComponentError, PluginLoadError
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
}


_warned: set[tuple[str, str]] = set()


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

    def _register(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        self.plugins[info.name] = info
        obj: Any = None
        try:
            obj = load()
            self.pm.register(obj, name=info.name)
            self._check_hook_names(obj)
        except Exception as exc:  # a broken plugin must not take the others down
            if obj is not None and self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.status = "quarantined"
            info.error = f"{type(exc).__name__}: {exc}"
            _warn_once(info.name, info.error)
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(obj) or [])

    def _check_hook_names(self, obj: object) -> None:
        known = hookspecs.hook_names()
        for caller in self.pm.get_hookcallers(obj) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is obj and (impl.hookwrapper or impl.wrapper):
                    raise PluginLoadError(
                        f"implements {caller.name} as a hook wrapper, which asm does not support",
                        hint="asm calls each implementation on its own so one plugin cannot break another; "
                        "drop wrapper=True/hookwrapper=True",
                    )
            if caller.name.startswith("asm_") and caller.spec is None:
                close = difflib.get_close_matches(caller.name, known, n=1)
                raise PluginLoadError(
                    f"implements unknown hook {caller.name}",
                    hint=f"did you mean {close[0]}?" if close else "see docs/reference/hooks.md",
                )

    def register_object(self, obj: object, name: str, source: str = "direct") -> None:
        """Register a plugin object directly (tests, embedding applications)."""
        info = PluginInfo(name, getattr(obj, "__name__", type(obj).__name__), source)
        self._register(info, lambda: obj)
        if info.status == "quarantined":
            raise PluginLoadError(f"plugin {name!r} could not be registered: {info.error}")

    # -- registries -------------------------------------------------------------------------

    def collect_components(self) -> dict[str, Registry]:
        """Call every ``asm_register_*`` hook once, each plugin with its own ``register``."""
        if self._registered_components:
            return self.registries
        self._registered_components = True
        for kind, hook_name in KINDS.items():
            registry = self.registries[kind]
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                info = self.plugins.get(impl.plugin_name)
                before = set(registry.names())
                try:
                    impl.function(register=Register(registry, impl.plugin_name))
                except DuplicateComponentError:
                    raise
                except Exception as exc:
                    self._quarantine(impl.plugin_name, exc)
                    continue
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

    def notify(
        self, hook_name: str, on_error: Callable[[BaseException, str], None] | None = None, **kwargs: Any
    ) -> None:
        """Call every implementation; one that raises is reported and the rest still run."""
        for impl in self.impls(hook_name):
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:
                log.exception("hook %s of plugin %s raised", hook_name, impl.plugin_name)
                if on_error is not None:
                    on_error(exc, impl.plugin_name)

    def chain(self, hook_name: str, value_arg: str, **kwargs: Any) -> Any:
        """Call implementations in order, each seeing the value the previous one returned."""
        value = kwargs[value_arg]
        for impl in self.impls(hook_name):
            kwargs[value_arg] = value
            result = impl.function(*[kwargs[arg] for arg in impl.argnames])
            if result is not None:
                value = result
        return value

    def info(self) -> list[PluginInfo]:
        return sorted(self.plugins.values(), key=lambda p: (p.source != "builtin", p.name))
