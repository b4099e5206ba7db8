"""One worker process on the server's own listener: the app's lifespan, the connections, signals, drain and exit.

``serve_forever`` runs an event loop (uvloop when installed) until SIGTERM or SIGINT, both of which drain the same
way: readiness answers 503 at once while requests are still served (with ``Connection: close``) for
``PULSE_DRAIN_SECONDS``, so a load balancer takes the worker out before it stops; then the listener closes, idle
connections close, requests under way get ``PULSE_GRACEFUL_TIMEOUT_SECONDS`` to finish, the lifespan's shutdown
runs (request log flushed, last metrics written) and the process exits 0. A start-up that fails exits 3.

The ASGI lifespan protocol (``lifespan.startup``/``lifespan.shutdown``) is spoken here as the spec says; the state
the app's lifespan yields is what every connection reads (the worker's metrics, its coalescer, its drain hook).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from server.config.settings import Settings
from server.http.fast.framing import connection_ceiling
from server.http.fast.protocol import Connection
from server.monitoring.metrics import METRICS_KEY, Metrics
from server.ops.shutdown import STOP_SIGNALS
from server.pipeline.coalesce import COALESCER_KEY, DRAIN_KEY, Coalescer

logger = logging.getLogger("server")

BACKLOG = 2048  # pending connections the kernel queues per listening socket (uvicorn's default)
SWEEP_SECONDS = 0.05  # how late a deadline may act (the shortest is PULSE_HEADER_TIMEOUT_SECONDS's 0.1 s)
STARTUP_FAILED = 3  # the exit status of a worker whose lifespan start-up failed


class Worker:
    """What every connection of this worker shares: settings, the app, its lifespan state, the open connections and
    the ASGI requests under way."""

    def __init__(self, settings: Settings, app: Any, app_state: dict[str, Any], address: tuple[str, int]) -> None:
        self.settings = settings
        self.app = app
        self.app_state = app_state
        self.loop = asyncio.get_running_loop()
        self.metrics: Metrics = app_state[METRICS_KEY]
        self.coalescer: Coalescer = app_state[COALESCER_KEY]
        self.drain: Callable[[], None] = app_state[DRAIN_KEY]
        self.address = address
        self.scheme = "https" if settings.tls_cert is not None else "http"
        self.ceiling = connection_ceiling()
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def sweep(self) -> None:
        """Expire the connections' deadlines (head, body, keep-alive), ``SWEEP_SECONDS`` apart: one timer for the
        worker instead of one armed and cancelled per request."""
        loop = self.loop
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = loop.time()
            for connection in list(self.connections):
                connection.expire_by(now)

    @property
    def busy(self) -> bool:
        return bool(self.tasks) or self.coalescer.queued > 0 or any(c.active is not None for c in self.connections)


class Lifespan:
    """The ASGI lifespan protocol, from the server's side."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.error: str | None = None
        self._inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        return self.error is None

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self._task is not None:
            await self._task

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:
            if not self._started.is_set():
                self.error = self.error or f"{type(exc).__name__}: {exc}"
            logger.error("lifespan failed", exc_info=exc)
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self.error = message.get("message") or "start-up failed"
            self._started.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            if kind.endswith("failed"):
                logger.error("lifespan shutdown failed: %s", message.get("message", ""))
            self._stopped.set()


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, made once (by the supervisor when there are several workers, who all accept on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def serve_forever(settings: Settings, app: Any, sockets: list[socket.socket]) -> int:
    """Serve ``app`` on ``sockets`` until a stop signal has drained the worker; the process's exit status."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - the serve extra installs uvloop where it exists
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_serve(settings, app, sockets))


async def _serve(settings: Settings, app: Any, sockets: list[socket.socket]) -> int:
    loop = asyncio.get_running_loop()
    lifespan = Lifespan(app)
    if not await lifespan.startup():
        logger.error("worker start-up failed: %s", lifespan.error)
        return STARTUP_FAILED
    address = sockets[0].getsockname()
    worker = Worker(settings, app, lifespan.state, (str(address[0]), int(address[1])))
    context = tls_context(settings)
    servers = [
        await loop.create_server(lambda: Connection(worker), sock=sock, ssl=context, backlog=BACKLOG)
        for sock in sockets
    ]
    sweeper = loop.create_task(worker.sweep())
    logger.info("listening on %s://%s:%d", worker.scheme, *worker.address)
    stopping = asyncio.Event()
    stop_now = asyncio.Event()

    def on_signal(number: int) -> None:
        if stopping.is_set():
            return  # a drain is under way; it is bounded
        stopping.set()
        worker.drain()
        name = signal.Signals(number).name
        if settings.drain_seconds > 0:
            logger.info("%s received: not ready, draining for %.1fs", name, settings.drain_seconds)
            loop.call_later(settings.drain_seconds, stop_now.set)
        else:
            logger.info("%s received: stopping", name)
            stop_now.set()

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:  # the handlers stay until the end: another Ctrl-C during the shutdown changes nothing (it is bounded)
        await stop_now.wait()
        await _stop(worker, servers, settings.graceful_timeout_seconds)
        sweeper.cancel()
        await lifespan.shutdown()
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
    return 0


async def _stop(worker: Worker, servers: list[asyncio.Server], graceful_seconds: float) -> None:
    """Stop listening, close idle connections, give the requests under way ``graceful_seconds``, then cut."""
    for server in servers:
        server.close()
    for connection in list(worker.connections):
        connection.shutdown()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + graceful_seconds
    while worker.busy and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if worker.busy:
        logger.warning("graceful period over: %d requests cut off", len(worker.tasks))
    for task in list(worker.tasks):
        task.cancel()
    for connection in list(worker.connections):
        connection.transport.abort()
    for server in servers:
        await server.wait_closed()
