"""The one log format of every command (train, score, server), and the command-line tools' logging configuration."""

from __future__ import annotations

import logging
import sys
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test runners swap it between tests)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


CLI_LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"format": FORMAT}},
    "handlers": {"stderr": {"()": "common.logconfig.StderrHandler", "formatter": "default"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"numba": {"level": "WARNING"}, "matplotlib": {"level": "WARNING"}},
}
