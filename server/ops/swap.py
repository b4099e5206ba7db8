"""Swapping the served model without downtime: ``POST /admin/model``, ``SIGHUP``, and every worker of ``--workers N``.

The new file is loaded beside the serving one, off the event loop (``asyncio.to_thread``), through every start-up
check (size, sha256, metadata, golden rows, warm-up); only then is the worker's ``state.served`` replaced, in one
assignment. A request holds the ``ServedModel`` it started with, so it finishes on that model and names its
version; the next request gets the new one. A failed check leaves the old model serving and answers 422 with the
reason. A model whose input features differ is refused unless ``force`` is given (clients would break).

With several workers, the worker that swapped writes a control record (``model-control.json``) into the shared
metrics folder; every other worker reads it on its metrics tick (every 0.1 s) and swaps itself; ``SIGHUP`` to the
supervisor writes the same record for the configured model path. The admin request answers once every live worker
reports the new version in its metrics snapshot (or after ``WAIT_SECONDS``, saying which have not).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from common.model.loader import Model, ModelError, load_model
from server.config.keys import KeyRing, KeysError
from server.core.errors import ApiError
from server.monitoring.drift import DriftWindow
from server.monitoring.metrics import alive

if TYPE_CHECKING:
    from server.core.served import ServedModel
    from server.pipeline.state import ServerState

logger = logging.getLogger(__name__)

CONTROL_FILE = "model-control.json"
WAIT_SECONDS = 30.0


class SwapRefused(ApiError):
    """422: the new model failed a check; the old one keeps serving."""

    status_code = 422


def write_control(folder: Path, path: Path, sha256: str, force: bool) -> int:
    """Ask every worker to serve ``path``: the next generation of the control record. Returns its generation."""
    generation = int(read_control(folder).get("generation", 0)) + 1
    record = {"generation": generation, "path": str(path), "sha256": sha256, "force": force, "time": time.time()}
    target = folder / CONTROL_FILE
    temporary = target.with_name(f".{CONTROL_FILE}.{os.getpid()}")
    temporary.write_bytes(orjson.dumps(record))
    os.replace(temporary, target)
    return generation


def read_control(folder: Path) -> dict[str, Any]:
    try:
        record: dict[str, Any] = orjson.loads((folder / CONTROL_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return record


class ModelSwapper:
    """One worker's model swaps (one at a time) and API key reloads."""

    def __init__(self, state: ServerState, serve: Callable[[Model], ServedModel]) -> None:
        self.state = state
        self._serve = serve
        self._lock = asyncio.Lock()
        folder = state.settings.metrics_dir
        self.generation = read_control(folder).get("generation", 0) if folder is not None else 0
        self._tasks: set[asyncio.Task[Any]] = set()

    async def swap(self, path: Path, sha256: str = "", force: bool = False) -> ServedModel:
        """Load, check and serve ``path``; :class:`SwapRefused` (old model kept) when it cannot be served."""
        settings = self.state.settings
        async with self._lock:
            try:
                model = await asyncio.to_thread(
                    load_model, path, sha256, settings.ort_threads, settings.max_model_bytes
                )
            except ModelError as exc:
                raise SwapRefused(f"model not swapped: {exc}") from None
            old = self.state.served
            if old is not None and model.info.features != old.info.features and not force:
                raise SwapRefused(
                    f"model not swapped: its input features {list(model.info.features)} differ from the served "
                    f'{list(old.info.features)}; clients would break (send "force": true to swap anyway)'
                )
            served = self._serve(model)
            metrics = self.state.metrics
            metrics.info = {"version": model.info.version, "sha256": model.info.sha256}
            if model.drift_columns is not None:  # the window compares against the new model's training data
                metrics.drift = DriftWindow(model.drift_columns, settings.drift_slots, settings.drift_slot_seconds)
            else:
                metrics.drift = None
            self.state.served = served
            metrics.flush()
            logger.info("model swapped version=%s sha256=%s path=%s", model.info.version, model.info.sha256[:12], path)
            return served

    async def broadcast(self, path: Path, served: ServedModel, force: bool) -> dict[str, str]:
        """Have every other worker serve the model this one just swapped to; each live worker's version once all
        report it (or after ``WAIT_SECONDS``)."""
        metrics = self.state.metrics
        folder = self.state.settings.metrics_dir
        if folder is None:
            return {str(metrics.pid): served.info.version}
        self.generation = write_control(folder, path, served.info.sha256, force)  # with the sha256 it must have
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            versions = {
                str(snapshot["pid"]): snapshot.get("info", {}).get("version", "")
                for snapshot in metrics.snapshots()
                if snapshot["pid"] == metrics.pid or alive(snapshot["pid"])
            }
            if all(version == served.info.version for version in versions.values()) or time.monotonic() > deadline:
                return versions
            await asyncio.sleep(0.05)

    def reload_keys(self) -> None:
        """Re-read ``PULSE_API_KEYS_FILE``; a bad file is logged and the keys in use are kept."""
        path = self.state.settings.api_keys_file
        if path is None:
            return
        try:
            self.state.keys = KeyRing.load(path)
        except KeysError as exc:
            logger.error("API keys not reloaded, the previous keys stay in use: %s", exc)
            return
        logger.info("API keys reloaded keys=%d", len(self.state.keys.keys))

    def on_sighup(self) -> None:
        """Reload the keys and swap to the configured model path (in the background; failures are logged)."""
        self.reload_keys()
        settings = self.state.settings
        self._background(self.swap(settings.model_path, settings.model_sha256))

    def poll_control(self) -> None:
        """Follow a swap another worker (or the supervisor's SIGHUP) asked for; called on the metrics tick."""
        folder = self.state.settings.metrics_dir
        if folder is None:
            return
        record = read_control(folder)
        if record.get("generation", 0) <= self.generation:
            return
        self.generation = record["generation"]
        self.reload_keys()
        served = self.state.served
        if served is not None and served.info.sha256 == record.get("sha256") and record.get("sha256"):
            return  # this worker made the swap
        self._background(self.swap(Path(record["path"]), record.get("sha256", ""), bool(record.get("force"))))

    def _background(self, swap: Any) -> None:
        async def run() -> None:
            try:
                await swap
            except SwapRefused as exc:
                logger.error("%s", exc.detail)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
