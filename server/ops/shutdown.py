"""The drain on SIGTERM or SIGINT in stock mode (uvicorn owns the signals there; our own listener drains the same
way itself): readiness goes 503 at once, requests keep being served (with ``Connection: close``) for
``drain_seconds``, then uvicorn's own handling of the signal closes the listener and finishes in-flight requests.

This is what a Kubernetes rolling update needs: the endpoint is removed from the Service while the pod still
answers whatever reaches it, and keep-alive clients are told to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class DrainOnSignal:
    def __init__(self, seconds: float, on_drain: Callable[[], None]) -> None:
        self.seconds = seconds
        self._on_drain = on_drain
        self._previous: dict[int, Any] = {}
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Wrap the current handlers (uvicorn's); signals can only be handled in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, previous in self._previous.items():
            if signal.getsignal(number) == self._handle:
                signal.signal(number, previous)
        self._previous = {}

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.seconds <= 0 or self._loop is None:
            self._on_drain()
            self._forward(sig)
            return
        self._draining = True
        self._on_drain()
        logger.info("%s received: not ready, draining for %.1fs", signal.Signals(sig).name, self.seconds)
        self._loop.call_soon_threadsafe(self._loop.call_later, self.seconds, self._forward, sig)

    def _forward(self, sig: int) -> None:
        previous = self._previous.get(sig)
        if callable(previous):
            previous(sig, None)
        elif previous == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
