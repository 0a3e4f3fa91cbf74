"""Registries of components, filled by the ``asm_register_*`` hooks.

Each plugin's hook receives its own :class:`Register` so every component remembers which plugin
contributed it; a second registration of the same name is refused with an error naming both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from attrs import frozen

from .errors import DuplicateComponentError, UnknownComponentError, ValidationError

__all__ = ["ComponentSpec", "Register", "Registry", "KINDS"]

#: Component kinds and the hook that registers each.
KINDS: dict[str, str] = {
    "store": "asm_register_stores",
    "provider": "asm_register_providers",
    "router": "asm_register_routers",
    "policy": "asm_register_policies",
    "telemetry": "asm_register_telemetry",
    "tool": "asm_register_tools",
}


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
            known = ", ".join(sorted(self._specs)) or "none"
            raise UnknownComponentError(
                f"no {self.kind} named {name!r} is installed",
                path=path,
                hint=f"installed {self.kind}s: {known}; install the plugin that provides it "
                f"(pip install asm-{name}) or fix the name",
                kind=self.kind,
                name=name,
            ) from None

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
