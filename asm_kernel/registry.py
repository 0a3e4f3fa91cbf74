"""Registries of components, filled by the ``asm_register_*`` hooks.

Each plugin's hook receives its own :class:`Register` so every component remembers which plugin
contributed it; a second registration of the same name is refused with an error naming both.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attrs import frozen

from .errors import DuplicateComponentError, UnknownComponentError, ValidationError

__all__ = ["ComponentSpec", "Register", "Registry", "KINDS", "FIRST_PARTY", "install_hint", "plural"]

#: Component kinds and the hook that registers each.
KINDS: dict[str, str] = {
    "store": "asm_register_stores",
    "provider": "asm_register_providers",
    "router": "asm_register_routers",
    "policy": "asm_register_policies",
    "telemetry": "asm_register_telemetry",
    "tool": "asm_register_tools",
}

#: Components of the first-party plugins, by (kind, name): the distribution that provides each.
FIRST_PARTY: dict[tuple[str, str], str] = {
    ("store", "duckdb"): "asm-duckdb",
    ("provider", "anthropic"): "asm-anthropic",
    ("provider", "openai"): "asm-openai",
}

_PLURAL = {"policy": "policies", "telemetry": "telemetry sinks"}


def plural(kind: str) -> str:
    """``providers``, ``policies``, ``telemetry sinks``: a kind's name for many of it."""
    return _PLURAL.get(kind, kind + "s")


def install_hint(distribution: str) -> str:
    """The command that installs a first-party plugin distribution.

    From a checkout of asm (the plugin's directory sits next to the kernel package) that is
    ``pip install ./plugins/<distribution>``, a path that exists; elsewhere the package name.
    """
    checkout = Path(__file__).resolve().parent.parent / "plugins" / distribution
    if not (checkout / "pyproject.toml").is_file():
        return f"pip install {distribution}"
    try:
        relative = os.path.relpath(checkout)
    except ValueError:  # another drive (Windows)
        relative = ".."
    if relative.startswith(".."):
        return f"pip install {checkout}"
    return f"pip install ./{Path(relative).as_posix()}"


@frozen
class ComponentSpec:
    """A registered component: how to build it and who contributed it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    settings: type | None = None
    description: str = ""


class Registry:
    """All components of one kind, by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, ComponentSpec] = {}

    def add(self, spec: ComponentSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{self.kind} {spec.name!r} is registered by both plugin {existing.plugin!r} "
                f"and plugin {spec.plugin!r}",
                hint=f"disable one of them with plugins.disabled = [{spec.plugin!r}] or ASM_DISABLED_PLUGINS",
                kind=self.kind,
                name=spec.name,
                plugins=f"{existing.plugin},{spec.plugin}",
            )
        self._specs[spec.name] = spec

    def get(self, name: str, *, path: str | None = None) -> ComponentSpec:
        try:
            return self._specs[name]
        except KeyError:
            from .config.sources import MaskedStr

            details: dict[str, Any] = {} if isinstance(name, MaskedStr) else {"name": name}
            raise UnknownComponentError(
                f"no {self.kind} named {name!r} is installed",
                path=path,
                hint=self._unknown_hint(name),
                kind=self.kind,
                **details,
            ) from None

    def _unknown_hint(self, name: str) -> str:
        from .config.sources import MaskedStr

        names = self.names()
        parts = []
        # An interpolated name is a secret: no hint may tell what it is close to.
        if not isinstance(name, MaskedStr):
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            if close:
                parts.append(f'did you mean "{close[0]}"?')
            distribution = FIRST_PARTY.get((self.kind, name))
            if distribution:
                parts.append(f"{install_hint(distribution)} to add it")
        parts.append(f"installed {plural(self.kind)}: {', '.join(names) or 'none'}")
        if len(parts) == 1:
            parts.append("install a plugin that provides it (`asm plugins` lists what each provides), or fix the name")
        return "; ".join(parts)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ComponentSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)


class Register:
    """The callable handed to ``asm_register_*`` hooks.

    ``register(name, factory, settings=SettingsClass, description="...")``. ``settings`` is an
    attrs class; the component's config table is validated against it (unknown keys and wrong
    types are errors with the config path) and the instance is passed to ``factory``.
    """

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin

    @property
    def kind(self) -> str:
        return self._registry.kind

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        settings: type | None = None,
        description: str = "",
    ) -> None:
        if not isinstance(name, str) or not name or not name.replace("-", "_").replace(".", "_").isidentifier():
            raise ValidationError(
                f"plugin {self._plugin!r} tried to register a {self.kind} with the invalid name {name!r}",
                hint="use a short name of letters, digits, '-', '_' or '.'",
            )
        if not callable(factory):
            raise ValidationError(
                f"plugin {self._plugin!r} registered {self.kind} {name!r} with a factory that is not callable"
            )
        if settings is not None and not hasattr(settings, "__attrs_attrs__"):
            raise ValidationError(
                f"plugin {self._plugin!r} registered {self.kind} {name!r} with settings "
                f"{settings!r}, which is not an attrs class"
            )
        self._registry.add(ComponentSpec(self.kind, name, factory, self._plugin, settings, description))
