"""The server file: how ``asm serve`` tells the CLI that it owns a store, and how a stale one is told.

``asm serve`` writes ``<store file>.server.json`` next to the store file once it listens and
removes it when it stops. The file holds ``url``, ``pid``, ``host``, ``instance`` (random per
server run), ``started_at``, ``store`` and ``version``; no secret. A file whose process is gone
(same host, PID not alive) is stale. Standard library only: the kernel has no web dependency.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from attrs import asdict, frozen

__all__ = ["SERVER_FILE_SUFFIX", "ServerFile", "server_file_for", "write_server_file", "read_server_file", "pid_alive"]

log = logging.getLogger("asm.cli")

SERVER_FILE_SUFFIX = ".server.json"


@frozen
class ServerFile:
    """What ``asm serve`` writes next to the store it owns."""

    url: str
    pid: int
    host: str
    instance: str
    started_at: str
    store: str
    version: str = ""


def server_file_for(store_path: str | os.PathLike[str]) -> Path:
    """``<store file>.server.json`` of the store's real path (so a symlink finds the same file)."""
    real = os.path.realpath(os.path.expanduser(os.fspath(store_path)))
    return Path(real + SERVER_FILE_SUFFIX)


def write_server_file(path: Path, info: ServerFile) -> None:
    """Write atomically (a reader sees the old file or the new one, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_server_file(path: Path) -> ServerFile | None:
    """The file's contents, or None when it is missing, unreadable or stale."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = ServerFile(**{k: data[k] for k in ("url", "pid", "host", "instance", "started_at", "store")},
                          version=str(data.get("version", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the server file %s: %s", path, exc)
        return None
    if info.host == socket.gethostname() and not pid_alive(info.pid):
        log.debug("ignoring the stale server file %s: process %s is gone", path, info.pid)
        return None
    return info


def pid_alive(pid: int) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
