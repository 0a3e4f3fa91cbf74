"""Commands about the config: ``asm init``, ``asm config show`` and ``asm config check``."""

from __future__ import annotations

import argparse
import enum
from pathlib import Path
from typing import Any

import attrs

from ..config import MASK
from .api import CliContext
from .output import json_safe, toml_key, toml_value

__all__ = ["cmd_init", "cmd_config_show", "cmd_config_check", "effective_config"]


def cmd_init(args: argparse.Namespace, ctx: CliContext) -> int:
    from ..config import starter_config
    from ..errors import ConfigError

    path = Path(args.path)
    if path.exists() and not args.force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    try:
        path.write_text(starter_config(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}", hint="choose a path in an existing, writable directory"
        ) from None
    ctx.line(f'wrote {path}; edit it, then try: asm run "hello"')
    return 0


def cmd_config_check(args: argparse.Namespace, ctx: CliContext) -> int:
    """Everything ``asm run`` needs: every component built (the store not opened), [run] checked."""
    from ..config import mask
    from ..config.checks import check_run_defaults

    cfg = ctx.config()
    kernel = ctx.kernel(cfg)
    kernel._build_all()
    check_run_defaults(cfg.run, kernel.providers)
    if kernel.toolset.sources:  # tool sources (MCP servers) are reached, listed and closed again
        from .running import run_async

        async def probe() -> None:
            try:
                await kernel.toolset.open()
            finally:
                await kernel.toolset.close()

        run_async(probe())
    names = ", ".join(mask(name) for name in kernel.providers)  # an interpolated name is a secret
    ctx.line(f"config OK ({cfg.source or 'defaults'}): store={type(kernel.store).__name__}, providers={names}")
    return 0


def _plain(value: Any) -> Any:
    """A settings record as config data, defaults filled in (secrets stay objects, to be masked)."""

    def convert(inst: Any, field: Any, item: Any) -> Any:
        if isinstance(item, Path):
            return str(item)
        if isinstance(item, enum.Enum):
            return item.value
        if isinstance(item, tuple | frozenset | set):
            return list(item)
        return item

    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=True, value_serializer=convert)
    return dict(value)


def _component(kernel: Any, kind: str, component: Any, default: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The component's effective table and what provides it (plugin, file, or the problem)."""
    from ..config import mask, validate_settings
    from ..errors import AsmError

    table: dict[str, Any] = mask({"use": component.use, "name": component.name})
    about: dict[str, Any] = {"kind": kind, "use": table["use"], "default": default, "plugin": None}
    try:
        spec = kernel.registries[kind].get(component.use, path=f"{component.path}.use")
        plugin = kernel.plugins.plugins.get(spec.plugin)
        about.update(
            plugin=spec.plugin,
            distribution=plugin.distribution if plugin else None,
            version=plugin.version if plugin else None,
        )
        settings = validate_settings(spec.settings, component.settings, component.path) if spec.settings else None
        table.update(mask(_plain(settings) if settings is not None else dict(component.settings)))
        if kind == "store":
            built = kernel.build(kind, component)  # not opened: only where its data would go
            file = getattr(built, "path", None)
            if isinstance(file, str | Path):
                about["file"] = str(file)
    except AsmError as exc:
        table.update(mask(dict(component.settings)))
        about["problem"] = str(exc)
    return table, about


def effective_config(ctx: CliContext) -> dict[str, Any]:
    """What ``asm config show --json`` prints: the config as asm would run it, secrets masked."""
    from ..config import ComponentConfig, mask
    from ..config.validation import secret_values

    cfg = ctx.config()
    kernel = ctx.kernel(cfg)
    config: dict[str, Any] = {}
    components: dict[str, Any] = {}
    hidden = secret_values(cfg.raw)

    def conceal(path: str) -> str:
        """A path built from interpolated values (``home = "${DATA}/asm"``), those values masked."""
        for secret in hidden:
            path = path.replace(secret, MASK)
        return path

    def add(section: str, kind: str, component: Any, default: bool, index: int | None = None) -> None:
        table, about = _component(kernel, kind, component, default)
        if "file" in about:
            about["file"] = conceal(about["file"])
        components[component.path] = about
        if index is None:
            config[section] = table
        else:
            config.setdefault(section, []).append(table)

    store = cfg.store
    add("store", "store", store or kernel.default_store_config(), store is None)
    providers = cfg.providers or (ComponentConfig("echo", "echo", {}, "providers[0]"),)
    for i, provider in enumerate(providers):
        add("providers", "provider", provider, not cfg.providers, i)
    if cfg.router is not None:
        add("router", "router", cfg.router, False)
    else:
        first = [cfg.run.provider] if cfg.run.provider else []
        prefer = first + [p.name for p in providers if p.name != cfg.run.provider]
        add("router", "router", ComponentConfig("capability", "capability", {"prefer": prefer}, "router"), True)
    for section, kind in (("policies", "policy"), ("telemetry", "telemetry"), ("tools", "tool")):
        config[section] = []
        for i, component in enumerate(getattr(cfg, section)):
            add(section, kind, component, False, i)
    for section in ("plugins", "run", "runtime", "resilience", "tool_calls"):
        config[section] = mask(_plain(getattr(cfg, section)))
    config["home"] = conceal(str(cfg.home))
    return json_safe(
        {
            "source": str(cfg.source) if cfg.source else None,
            "home": config["home"],
            "config": config,
            "components": components,
        }
    )


def _provenance(about: dict[str, Any]) -> str:
    if about.get("problem"):
        return f"  # cannot be built: {about['problem']}"
    plugin = about.get("plugin")
    dist = f" ({about['distribution']} {about['version']})" if about.get("distribution") else ""
    default = ", the default" if about.get("default") else ""
    return f"  # from plugin {plugin}{dist}{default}" if plugin else ""


def _toml(info: dict[str, Any]) -> list[str]:
    config, components = info["config"], info["components"]
    lines = [f"# source: {info['source'] or '(none: defaults)'}", f"home = {toml_value(config['home'])}"]

    def table(header: str, values: dict[str, Any], about: dict[str, Any] | None) -> None:
        lines.append("")
        lines.append(header + (_provenance(about) if about else ""))
        if about and about.get("file"):
            lines.append(f"# file: {about['file']}")
        for key, value in values.items():
            lines.append(f"{toml_key(key)} = {toml_value(value)}" if value is not None else f"# {key}: not set")

    for section, values in config.items():
        if section in ("store", "router"):
            table(f"[{section}]", values, components.get(section))
        elif isinstance(values, list):
            for i, item in enumerate(values):
                table(f"[[{section}]]", item, components.get(f"{section}[{i}]"))
        elif isinstance(values, dict):
            table(f"[{section}]", values, None)
    return lines


def cmd_config_show(args: argparse.Namespace, ctx: CliContext) -> int:
    info = effective_config(ctx)
    if args.json:
        ctx.json_out(info)
    else:
        ctx.line("\n".join(_toml(info)))
    return 0
