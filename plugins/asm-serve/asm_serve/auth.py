"""Bearer API keys and tenant scopes.

The server keeps only the SHA-256 of each key: the token itself is registered as a secret (so no
response, log line or error can show it) and dropped. A request's ``Authorization: Bearer <key>``
is hashed and compared with every known hash in constant time, so neither the comparison nor the
number of keys tells an attacker anything.

A key scoped to ``agent_ids`` is a tenant: it sees the sessions of those agents only, and every
other session (and its runs and events) is answered exactly as a session that does not exist —
404, with the same message — so a tenant cannot even learn that another tenant's id is taken.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from asm_kernel.errors import RunNotFoundError, SessionNotFoundError
from asm_kernel.model import Session
from attrs import frozen

from .errors import ForbiddenError, UnauthorizedError
from .settings import KeySettings

__all__ = ["Principal", "Authenticator", "digest", "session_not_found", "run_not_found"]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def session_not_found(session_id: str) -> SessionNotFoundError:
    """The one not-found answer for a session: the same whether it is missing or not the caller's."""
    return SessionNotFoundError(f"session {session_id[:200]} not found", hint="check the session id")


def run_not_found(run_id: str) -> RunNotFoundError:
    return RunNotFoundError(f"run {run_id[:200]} not found", hint="check the run id")


@frozen
class Principal:
    """Who is calling: a key's name and the agents it may see (None: every agent)."""

    name: str
    agent_ids: frozenset[str] | None = None

    @property
    def operator(self) -> bool:
        """An unscoped key (or no auth at all): sees every session and the server's own data."""
        return self.agent_ids is None

    def sees(self, agent_id: str) -> bool:
        return self.agent_ids is None or agent_id in self.agent_ids

    def check(self, session: Session) -> Session:
        """``session`` if the caller may see it; otherwise the same 404 as a missing session."""
        if not self.sees(session.agent_id):
            raise session_not_found(session.id)
        return session

    def require_operator(self, what: str) -> None:
        if not self.operator:
            raise ForbiddenError(f"{what} is for operator keys", hint="use a key without agent_ids")


#: The caller when the server has no keys (it then listens on loopback only).
ANONYMOUS = Principal("anonymous")


class Authenticator:
    """Checks ``Authorization`` headers against the configured keys."""

    def __init__(self, keys: Iterable[KeySettings]) -> None:
        self._keys: list[tuple[bytes, Principal]] = []
        for key in keys:
            hashed = key.sha256 if key.sha256 is not None else digest(key.token or "")
            scope = frozenset(key.agent_ids) if key.agent_ids else None
            self._keys.append((hashed.encode("ascii"), Principal(key.name, scope)))

    def __repr__(self) -> str:
        return f"Authenticator({len(self._keys)} keys)"

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` header; raises UnauthorizedError (never echoing it)."""
        if not self._keys:
            return ANONYMOUS
        if not header:
            raise UnauthorizedError(
                "this server needs an API key", hint="send the header Authorization: Bearer <key>"
            )
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError(
                "the Authorization header is not a bearer key", hint="send Authorization: Bearer <key>"
            )
        presented = digest(token).encode("ascii")
        found: Principal | None = None
        for hashed, principal in self._keys:
            # Every key is compared, whatever matched before: the time taken says nothing.
            if hmac.compare_digest(presented, hashed):
                found = principal
        if found is None:
            raise UnauthorizedError("unknown API key", hint="check the key, or ask the operator for one")
        return found
