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

from common.model.loader import ModelError, load_model
from server.config.settings import Settings
from server.monitoring.metrics import live_snapshots
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
