"""The supervisor of ``--workers N``: it binds the socket once, starts N worker processes that all accept on it,
starts a new one in place of any that dies, swaps the model in place on SIGHUP, and on SIGTERM or SIGINT asks every
worker to drain (``server.http.fast.listener``) and waits for them.

SIGHUP asks every worker to load the configured model path beside the serving model and swap (``server.ops.swap``),
and to reload the API keys: no worker restarts, no request is refused.

Workers are started with ``spawn`` (a fresh interpreter; onnxruntime's threads do not survive ``fork``) and each
loads its own onnxruntime session.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from common.model.loader import ModelError, load_model
from server.config.settings import Settings
from server.monitoring.metrics import live_snapshots
from server.ops.control import write_control

logger = logging.getLogger("server")

POLL_SECONDS = 0.5  # how soon a dead worker is replaced
EXIT_MARGIN_SECONDS = 5.0  # beyond a worker's drain and graceful period before it is killed


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        target: Callable[..., Any],
        args: tuple[Any, ...],
        sockets: list[socket.socket],
    ) -> None:
        if settings.metrics_dir is None:  # pragma: no cover - python -m server makes one for N workers
            raise ValueError("N workers swap models through the metrics folder")
        self.settings = settings
        self.folder = settings.metrics_dir
        self._target, self._args, self._sockets = target, args, sockets
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[BaseProcess] = []
        self._wake = threading.Event()
        self._stopping: str | None = None
        self._hup = False

    def run(self) -> int:
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, self._on_signal)
        logger.info("supervisor started %d workers", self.settings.workers)
        self._workers = [self._start() for _ in range(self.settings.workers)]
        while self._stopping is None:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._hup:
                self._hup = False
                self.handle_hup()
            if self._stopping is None:
                self._replace_dead()
        self._stop()
        return 0

    def _on_signal(self, number: int, frame: object) -> None:
        if number == signal.SIGHUP:
            self._hup = True
        elif self._stopping is None:
            self._stopping = signal.Signals(number).name
        self._wake.set()

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=self._target, args=(*self._args, self._sockets), daemon=False)
        process.start()
        return process

    def _replace_dead(self) -> None:
        for index, process in enumerate(self._workers):
            if process.exitcode is not None:
                logger.warning("worker %s exited with %s: starting another", process.pid, process.exitcode)
                process.close()
                self._workers[index] = self._start()

    def _stop(self) -> None:
        """Every worker drains (a terminal's Ctrl-C reached them all already; a second signal changes nothing)."""
        logger.info("%s received: every worker drains and stops", self._stopping)
        for process in self._workers:
            if process.exitcode is None:
                process.terminate()  # SIGTERM
        settings = self.settings
        patience = settings.drain_seconds + settings.graceful_timeout_seconds + EXIT_MARGIN_SECONDS
        for process in self._workers:
            process.join(patience)
            if process.exitcode is None:
                logger.error("worker %s did not stop in %.0fs: killed", process.pid, patience)
                process.kill()
                process.join()

    def handle_hup(self) -> None:
        """Ask every worker for the file now at the model path, once it passes the checks a worker would make: a
        file every worker refuses must not become the model a restarted worker starts on."""
        settings = self.settings
        try:
            new = load_model(settings.model_path, settings.model_sha256, 1, settings.max_model_bytes)
        except ModelError as exc:
            logger.error("SIGHUP: model not swapped: %s", exc)
            return
        served = {s.get("info", {}).get("features") for s in live_snapshots(self.folder)} - {None}
        if served and served != {",".join(new.info.features)}:
            logger.error(
                "SIGHUP: model not swapped: its input features differ from the served model's; clients would break "
                "(POST /admin/model with force to swap anyway)"
            )
            return
        generation = write_control(self.folder, settings.model_path, new.info.sha256, force=False).generation
        logger.info(
            "SIGHUP: every worker swaps to %s and reloads its API keys (generation %d)", settings.model_path, generation
        )
