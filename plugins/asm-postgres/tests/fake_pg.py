"""A wire-faithful fake PostgreSQL server that refuses every password (SQLSTATE 28P01).

The local test server trusts every login (``trust`` in pg_hba.conf), so a real "password
authentication failed" cannot be provoked on it without editing the shared server's config.
This server speaks the start of the real protocol instead: it declines SSL/GSS encryption,
reads the startup message, asks for a cleartext password (``AuthenticationCleartextPassword``),
reads it, and answers with the ``ErrorResponse`` a real server sends. libpq and psycopg handle
it exactly as they would a real refusal. It records the passwords it was sent, so a test can
prove the password reached the wire yet not the error message.
"""

from __future__ import annotations

import asyncio
import struct

__all__ = ["PasswordRefusingServer"]

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


def _error(user: str) -> bytes:
    fields = b""
    for code, value in (
        (b"S", "FATAL"),
        (b"V", "FATAL"),
        (b"C", "28P01"),
        (b"M", f'password authentication failed for user "{user}"'),
    ):
        fields += code + value.encode() + b"\0"
    fields += b"\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


class PasswordRefusingServer:
    def __init__(self) -> None:
        self.passwords: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> PasswordRefusingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                body = await reader.readexactly(length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if code in (_SSL_REQUEST, _GSS_REQUEST):
                    writer.write(b"N")  # no encryption here: go on in plaintext
                    await writer.drain()
                    continue
                break
            parts = body[4:].split(b"\0")
            params = dict(zip(parts[0::2], parts[1::2], strict=False))
            user = params.get(b"user", b"?").decode()
            writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            await writer.drain()
            kind = await reader.readexactly(1)
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            password = (await reader.readexactly(length - 4)).rstrip(b"\0").decode()
            if kind == b"p":
                self.passwords.append(password)
            writer.write(_error(user))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
