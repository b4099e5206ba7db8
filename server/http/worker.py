"""One worker: the application for the settings, served by our own listener (fast mode) or by uvicorn through its
public API (stock mode). ``python -m server`` runs one in its own process, or N under the supervisor."""

from __future__ import annotations

import logging.config
import signal
import socket
import sys
from typing import Any

from common.model.loader import Model
from server.config.settings import Settings
from server.http.app import create_app
from server.http.fast.listener import STARTUP_FAILED, serve_forever
from server.ops.shutdown import STOP_SIGNALS


def run_worker(settings: Settings, sockets: list[socket.socket], model: Model | None = None) -> int:
    """Serve on ``sockets`` until stopped; the exit status (``STARTUP_FAILED`` when start-up failed)."""
    app = create_app(settings, model)
    if settings.http == "fast":
        return serve_forever(settings, app, sockets)
    import uvicorn

    config = uvicorn.Config(
        app,
        loop="auto",  # uvloop when installed (the serve extra installs it)
        http="auto",  # uvicorn's own httptools protocol (h11 without httptools)
        ws="none",  # no WebSocket route: an upgrade request is answered as plain HTTP, never held open
        lifespan="on",
        log_config=None,  # ours, configured already
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=False,  # nothing here reads the client's address; the middleware cost every request
        timeout_graceful_shutdown=settings.graceful_timeout_seconds,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = uvicorn.Server(config)
    for number in STOP_SIGNALS:
        # uvicorn raises the signal it stopped on again once it has shut down, into the handler found before it:
        # this one, so that a drain asked for and done exits 0 as in fast mode (not 143, or 130 with a traceback).
        signal.signal(number, _stopped)
    server.run(sockets=sockets)
    return 0 if server.started else STARTUP_FAILED


def worker_process(settings: Settings, log_config: dict[str, Any], sockets: list[socket.socket]) -> None:
    """The entry point of a worker process the supervisor starts (a fresh interpreter)."""
    logging.config.dictConfig(log_config)
    sys.exit(run_worker(settings, sockets))


def _stopped(number: int, frame: object) -> None:
    """What a stop signal does once uvicorn has drained and shut down: nothing more."""
