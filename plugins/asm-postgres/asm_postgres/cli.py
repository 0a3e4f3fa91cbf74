"""``asm db status`` and ``asm db upgrade``: the Postgres schema's version, and its migrations.

Registered through the plugin's ``asm_register_commands`` hook. Both commands build the store
configured in ``[store]`` (which must be ``use = "postgres"``) and talk to the server on one
short connection; neither opens the pool.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import ConfigError

if TYPE_CHECKING:
    from .store import PostgresStore

__all__ = ["register_commands"]

_COMMANDS = {
    "status": "the schema's version beside the one this asm-postgres needs, and its migration history",
    "upgrade": "apply the missing migrations (creates the schema when it does not exist)",
}


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="db_command", metavar="{status,upgrade}")
    for name, text in _COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "--config", "-c", default=argparse.SUPPRESS, help="config file (default: ./asm.toml or ASM_CONFIG)"
        )
        p.add_argument("--json", action="store_true", help="machine-readable output")


def _store(ctx: Any) -> PostgresStore:
    from .store import PostgresStore

    kernel = ctx.kernel()
    component = kernel.config.store
    if component is None or component.use != "postgres":
        used = component.use if component is not None else "none"
        raise ConfigError(
            f"`asm db` manages the postgres store, and the config's store is {used!r}",
            path="store.use",
            hint='set use = "postgres" (and its dsn) in the [store] table',
        )
    store = kernel.build("store", component)
    if not isinstance(store, PostgresStore):  # pragma: no cover - another plugin took the name
        raise ConfigError(f"store {component.use!r} is not asm-postgres's store", path="store.use")
    return store


def cmd_db(args: argparse.Namespace, ctx: Any) -> int:
    command = getattr(args, "db_command", None)
    if command is None:
        ctx.err.write("asm db: choose a command: status or upgrade (asm db --help)\n")
        return 2
    store = _store(ctx)
    t = store.target
    where = f"{t.user}@{t.server}/{t.dbname}"
    as_json = bool(getattr(args, "json", False))
    if command == "upgrade":
        before, after = asyncio.run(store.upgrade())
        if as_json:
            ctx.json_out({"target": str(store.target), "schema": store.target.schema, "from": before, "to": after})
        elif before == after:
            ctx.line(f"schema {t.schema} on {where}: already at version {after}, nothing to do")
        else:
            ctx.line(f"schema {t.schema} on {where}: upgraded from version {before} to {after}")
        return 0
    status = asyncio.run(store.schema_status())
    if as_json:
        ctx.json_out(
            {
                "target": str(store.target),
                "schema": status.schema,
                "exists": status.exists,
                "version": status.version,
                "latest": status.latest,
                "state": status.state,
                "pending": list(status.pending),
                "history": [
                    {"version": v, "description": d, "applied_at": at, "applied_by": by}
                    for v, d, at, by in status.history
                ],
            }
        )
        return 0
    ctx.line(
        f"schema {status.schema} on {where}: version {status.version} ({status.state}; "
        f"this asm-postgres needs {status.latest})"
    )
    for version, description, applied_at, by in status.history:
        ctx.line(f"  {version:>3}  {applied_at[:19]}  {description}  ({by})")
    if status.pending:
        ctx.line(f"pending: {', '.join(map(str, status.pending))} - run `asm db upgrade`")
    return 0


def register_commands(cli: Any) -> None:
    cli.add("db", cmd_db, help="the Postgres store's schema: status and upgrade (asm-postgres)", configure=_configure)
