"""The supervisor of ``--workers N``: uvicorn's, except that SIGHUP swaps the model in place.

uvicorn's supervisor answers SIGHUP by restarting every worker. Here it asks every worker to load the configured
model path beside the serving model and swap (``server.ops.swap``), and to reload the API keys: no worker restarts,
no request is refused.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from uvicorn.supervisors import Multiprocess

from server.config.settings import Settings
from server.ops.control import write_control

logger = logging.getLogger("server")


class SwappingSupervisor(Multiprocess):
    def __init__(self, config: Any, sockets: list[socket.socket], settings: Settings) -> None:
        super().__init__(config, sockets=sockets)
        if settings.metrics_dir is None:  # pragma: no cover - python -m server makes one for N workers
            raise ValueError("N workers swap models through the metrics folder")
        self.settings = settings
        self.folder = settings.metrics_dir

    def handle_hup(self) -> None:
        settings = self.settings
        generation = write_control(self.folder, settings.model_path, settings.model_sha256, force=False).generation
        logger.info(
            "SIGHUP: every worker swaps to %s and reloads its API keys (generation %d)", settings.model_path, generation
        )
