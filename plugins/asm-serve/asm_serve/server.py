"""``AsmServer``: the kernel, its runtime and the app on uvicorn, started and stopped in order.

Start: the kernel opens its store (a DuckDB file is now this process's) and the runtime
recovers and resumes runs; the socket is bound (an error names ``serve.host``/``serve.port``);
uvicorn serves; the **server file** is written next to the store file, so the CLI finds the
server (:mod:`asm_kernel.cli.remote`).

Stop (SIGTERM, SIGINT, or :meth:`AsmServer.request_stop`), in this order:

1. stop accepting: the listening socket is closed, requests still arriving answer 503
   ``http.shutting_down`` (health and readiness still answer, so probes see it go);
2. runs: with ``serve.on_shutdown = "drain"`` queued and running runs get ``serve.shutdown_grace``
   seconds (default ``runtime.shutdown_grace``) to finish; whatever still runs then — and with
   ``"cancel"`` everything at once — is cancelled and recorded (``run_cancelled``, reason
   ``shutdown``); runs still queued stay ``pending`` in the store for the next start;
3. streams: every event stream is sent what was stored up to now, then an ``event: close``
   (reason ``shutdown``) with the id to resume from;
4. uvicorn finishes open responses and stops; the kernel closes the store (flushing it);
5. the server file is removed.

A second signal skips the drain and cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from asm_kernel.cli.serverfile import ServerFile, server_file_for, write_server_file
from asm_kernel.errors import ConfigError

from . import __version__
from .app import create_app
from .settings import ServeSettings, is_loopback
from .state import ServeState

if TYPE_CHECKING:
    from asm_kernel.kernel import Kernel

__all__ = ["AsmServer"]

log = logging.getLogger("asm.serve")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: AsmServer stops it in its own order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            path="serve.port" if isinstance(exc, OSError) and exc.errno in (98, 48) else "serve.host",
            hint="choose another port (--port), or stop what holds it",
        ) from None
    return sock


def _client_url(host: str, port: int) -> str:
    """A URL a client on this machine can connect to (a wildcard bind answers on loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class AsmServer:
    """Serve ``kernel`` (not started yet: the server starts and closes it) with ``settings``.

    ``await server.serve()`` runs until :meth:`request_stop` (thread-safe) or, with
    ``install_signals``, SIGTERM/SIGINT. ``ready`` is set once it listens; ``url`` then says where.
    """

    def __init__(
        self, kernel: Kernel, settings: ServeSettings, *, install_signals: bool = False, poll: float = 1.0
    ) -> None:
        if not settings.keys and not is_loopback(settings.host):
            raise ConfigError(
                f"no API key is configured, so asm serve listens on loopback only, not on {settings.host}",
                path="serve.host",
                hint="add [[serve.keys]] with a token to listen on other addresses",
            )
        self.kernel = kernel
        self.settings = settings
        self.state = ServeState(kernel, settings, poll=poll)
        self.state.instance = secrets.token_hex(8)
        self.app = create_app(self.state)
        self.install_signals = install_signals
        self.url: str | None = None
        self.server_file: Path | None = None
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._force = False
        self._uvicorn: _Uvicorn | None = None

    def __repr__(self) -> str:
        return f"AsmServer(url={self.url!r}, kernel={self.kernel!r})"

    def request_stop(self, force: bool = False) -> None:
        """Begin the graceful stop; safe from any thread. A second call cancels runs at once."""
        loop, stop = self.loop, self._stop
        if loop is None or stop is None:
            return

        def begin() -> None:
            if stop.is_set() or force:
                self._force = True
            stop.set()

        # From a signal handler (on the loop) or another thread alike: run it on the loop.
        with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
            loop.call_soon_threadsafe(begin)

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        kernel = self.kernel
        kernel.plugins.register_object(self.state.metrics, "asm_serve.metrics")
        await kernel.start()
        try:
            report = await kernel.runtime.start()
            if report.crashed or report.resumed:
                log.info("recovered %d crashed run(s), resumed %d queued run(s)", len(report.crashed),
                         len(report.resumed))
            sock = _bind(self.settings.host, self.settings.port)
            await self._run(sock)
        finally:
            await kernel.close()
            self._remove_server_file()

    async def _run(self, sock: socket.socket) -> None:
        settings = self.settings
        logging.getLogger("uvicorn.access").setLevel(logging.INFO if settings.access_log else logging.WARNING)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=settings.access_log, lifespan="off", proxy_headers=False,
            server_header=False, timeout_graceful_shutdown=5, timeout_keep_alive=5,
        )
        server = self._uvicorn = _Uvicorn(config)
        port = sock.getsockname()[1]
        self.url = _client_url(settings.host, port)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="asm-serve-uvicorn")
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if task.done():
            task.result()  # raises what stopped it
            return
        self._write_server_file()
        self._announce()
        self.ready.set()
        with self._signals():
            stopper = asyncio.create_task(self._stop.wait())  # type: ignore[union-attr]
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not task.done():
                await self._shutdown(server)
            await task

    @contextlib.contextmanager
    def _signals(self) -> Generator[None, None, None]:
        installed: list[signal.Signals] = []
        if self.install_signals and threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
        try:
            yield
        finally:
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _shutdown(self, server: _Uvicorn) -> None:
        state, kernel, settings = self.state, self.kernel, self.settings
        log.info("stopping: no new requests; %s runs", "cancelling" if settings.on_shutdown == "cancel" else "draining")
        state.accepting = False
        for listener in getattr(server, "servers", []):
            listener.close()
        if settings.on_shutdown == "drain" and not self._force:
            grace = settings.shutdown_grace or kernel.config.runtime.shutdown_grace
            sessions = [s.session_id for s in kernel.runtime.servers() if not s.idle]
            drained: asyncio.Future[list[Any]] = asyncio.gather(
                *(kernel.runtime.drain(sid) for sid in sessions), return_exceptions=True
            )
            stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._second_signal())
            # Until the runs are drained, the grace is over, or a second signal says hurry.
            await asyncio.wait({drained, stop_wait}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not drained.done():
                drained.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drained
        await kernel.runtime.shutdown(grace=0)  # what still runs is cancelled and recorded
        await state.hubs.close("shutdown")
        server.should_exit = True

    async def _second_signal(self) -> None:
        while not self._force:
            await asyncio.sleep(0.05)

    def _announce(self) -> None:
        keys = len(self.settings.keys)
        log.info("serving %r at %s (inspector: %s/)", self.kernel.store, self.url, self.url)
        if keys:
            log.info("%d API key(s) configured; requests need Authorization: Bearer <key>", keys)
        else:
            log.warning(
                "no API keys configured ([[serve.keys]]): anyone on this machine can use the API; "
                "listening on loopback only"
            )
        if self.server_file is None:
            log.info("the store has no file: clients find this server with ASM_URL=%s", self.url)

    def _write_server_file(self) -> None:
        path = getattr(self.kernel.store, "path", None)
        if not isinstance(path, str | os.PathLike):
            return
        target = server_file_for(path)
        info = ServerFile(
            url=self.url or "",
            pid=os.getpid(),
            host=socket.gethostname(),
            instance=self.state.instance,
            started_at=datetime.now(UTC).isoformat(),
            store=str(Path(path)),
            version=__version__,
        )
        try:
            write_server_file(target, info)
        except OSError as exc:
            log.warning("could not write the server file %s (%s): the CLI will not find this server by "
                        "itself; use ASM_URL=%s", target, exc, self.url)
            return
        self.server_file = target

    def _remove_server_file(self) -> None:
        if self.server_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.server_file.unlink()
            self.server_file = None
