"""Where the store connects, said without the password.

A DSN may carry a password (``postgresql://asm:pw@db/asm`` or ``password=pw``); so may
``PGPASSWORD``, the ``password`` setting, or ``~/.pgpass`` (which libpq reads itself and asm never
sees). Every password asm learns of is registered with :func:`asm_kernel.secrets.register_secret`,
so whatever asm prints or stores has it replaced; what the store shows of its connection is a
:class:`Target` (user, host, port, database, schema) and a masked DSN, never the raw one.

psycopg is imported inside the functions: this module is imported when a store is built, not
when the plugin is loaded.
"""

from __future__ import annotations

import os
import re

from asm_kernel.errors import ConfigError
from asm_kernel.secrets import mask_url, redact_text, register_secret
from attrs import frozen

__all__ = ["Target", "ConnInfo", "resolve", "scrub"]

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def scrub(text: str) -> str:
    """``text`` without any password: registered secrets, URL userinfo and ``password=`` values."""
    text = redact_text(text)
    text = _URL_PASSWORD.sub(r"\1:****@", text)
    return _KV_PASSWORD.sub(r"\1****", text)


@frozen
class Target:
    """The server, database and schema a store uses: what every error and repr names."""

    host: str
    port: str
    dbname: str
    user: str
    schema: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname} (schema {self.schema})"

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"


@frozen(repr=False)
class ConnInfo:
    """What libpq gets (``conninfo``, which may hold a password: never print it) and what to show."""

    conninfo: str
    target: Target
    masked: str

    def __repr__(self) -> str:
        return f"ConnInfo({self.masked!r})"


def _defaults() -> dict[str, str]:
    """libpq's defaults, environment included (PGHOST, PGPORT, PGUSER, PGDATABASE...)."""
    from psycopg import pq

    found: dict[str, str] = {}
    for option in pq.Conninfo.get_defaults():
        if option.val:
            found[option.keyword.decode()] = option.val.decode(errors="replace")
    return found


def resolve(
    dsn: str | None,
    *,
    schema: str,
    password: str | None = None,
    application_name: str = "asm",
    path: str = "store",
) -> ConnInfo:
    """Parse ``dsn`` (None: the ``PG*`` environment variables), register its password, describe it.

    Raises :class:`ConfigError` at ``<path>.dsn`` for a DSN libpq cannot parse (without echoing
    its password).
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    text = dsn or ""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(text).items() if v is not None}
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"is not a valid PostgreSQL connection string: {scrub(str(exc)).strip()}",
            path=f"{path}.dsn",
            hint="use a URL (postgresql://user@host:5432/dbname) or key=value pairs (host=... dbname=...)",
        ) from None
    if password:
        params["password"] = password
    params.setdefault("application_name", application_name)
    for secret in (params.get("password"), os.environ.get("PGPASSWORD")):
        register_secret(secret)
    defaults = _defaults()
    user = params.get("user") or defaults.get("user") or "?"
    host = params.get("host") or params.get("hostaddr") or defaults.get("host") or "localhost (unix socket)"
    port = params.get("port") or defaults.get("port") or "5432"
    dbname = params.get("dbname") or defaults.get("dbname") or user
    target = Target(host=host, port=port, dbname=dbname, user=user, schema=schema)
    if not text:
        masked = f"(PG* environment: {target})"
    elif "://" in text:
        masked = scrub(mask_url(text))
    else:
        masked = scrub(text)
    return ConnInfo(conninfo=make_conninfo("", **params), target=target, masked=masked)
