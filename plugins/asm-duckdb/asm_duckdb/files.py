"""Opening the DuckDB file: one store per file, typed errors, bounded waiting for the lock.

DuckDB lets one process at a time hold a database file (and a second process cannot even read
it meanwhile). Inside one process a second store on the same file would be a second writer
with its own seq and record caches, so it is refused too. The guard compares the file's *real*
path (symlinks and ``..`` resolved), so ``sub/../f.duckdb`` or a link to the file is the same
file, not a second store.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asm_kernel.errors import StorageError, StoreCorruptError, StoreLockedError

if TYPE_CHECKING:
    import duckdb

__all__ = ["real_path", "FileClaim", "connect"]

log = logging.getLogger("asm.duckdb")

_PID = re.compile(r"PID (\d+)")
_OPEN_FILES: set[str] = set()
_OPEN_FILES_LOCK = threading.Lock()


def real_path(path: Path) -> Path:
    """The file's canonical path: absolute, symlinks and ``..`` resolved (the file need not exist)."""
    return Path(os.path.realpath(path.expanduser()))


class _Locked(Exception):
    def __init__(self, holder: str, pid: int | None = None) -> None:
        super().__init__(holder)
        self.holder = holder
        self.pid = pid


class FileClaim:
    """This process's claim on a store file: at most one open store per real path."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.held = False

    def take(self) -> bool:
        with _OPEN_FILES_LOCK:
            if self.key in _OPEN_FILES:
                return False
            _OPEN_FILES.add(self.key)
            self.held = True
            return True

    def release(self) -> None:
        if self.held:
            with _OPEN_FILES_LOCK:
                _OPEN_FILES.discard(self.key)
            self.held = False


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create the directory {path.parent} for store file {path}: {exc.strerror or exc}",
            hint="set store.path to a file in a writable directory, or create the directory first",
            file=str(path),
        ) from None


def _connect_once(path: Path, *, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    import duckdb

    if not read_only:
        _ensure_parent(path)
    elif not path.exists():
        raise StorageError(
            f"store file {path} does not exist, so it cannot be opened read_only",
            hint="open it once without read_only to create it, or fix store.path",
            file=str(path),
        )
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        text = str(exc)
        low = text.lower()
        if "lock" in low and ("could not set lock" in low or "conflicting lock" in low):
            pid = _PID.search(text)
            if pid:
                raise _Locked(f"another process (PID {pid.group(1)})", int(pid.group(1))) from None
            raise _Locked("another process") from None
        if "not a valid duckdb database file" in low or "corrupt" in low:
            raise StoreCorruptError(
                f"store file {path} is not a valid DuckDB database: {text}",
                hint="move the file aside (asm will create a new one) or restore it from a backup",
                file=str(path),
            ) from None
        if "different configuration" in text:
            raise _Locked("another DuckDB connection in this process") from None
        raise StorageError(
            f"cannot open store file {path}: {text}",
            hint="check the file, its permissions, free disk space and the duckdb version",
            file=str(path),
        ) from None


def connect(
    path: Path, claim: FileClaim, *, read_only: bool, lock_timeout: float, config: dict[str, Any]
) -> duckdb.DuckDBPyConnection:
    """Claim ``path`` in this process and open it, retrying while another holder has it.

    Waits up to ``lock_timeout`` seconds (logging at INFO about once a second, so a CLI user
    sees why it waits), then raises :class:`StoreLockedError` naming the file and the holder's
    PID when DuckDB tells it.
    """
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    next_log = 0.0
    while True:
        holder, pid = "another asm store in this process", os.getpid()
        if claim.take():
            try:
                return _connect_once(path, read_only=read_only, config=config)
            except _Locked as exc:
                holder, pid = exc.holder, exc.pid  # type: ignore[assignment]
                claim.release()
            except BaseException:
                claim.release()
                raise
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            waited = f" after waiting {lock_timeout:g} s" if lock_timeout > 0 else ""
            raise StoreLockedError(
                f"store file {path} is in use by {holder}{waited}",
                hint="DuckDB lets one process at a time open the file: stop the other asm process or let it "
                "finish (or talk to the process that owns the file, e.g. `asm serve`); store.lock_timeout sets "
                "how long to wait",
                file=str(path),
                holder_pid=pid,
            )
        if now >= next_log:
            log.info("store file %s is in use by %s; retrying for up to %.1f s more", path, holder, remaining)
            next_log = now + 1.0
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.25)
