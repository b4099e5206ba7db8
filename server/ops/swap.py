"""Swapping the served model without downtime: ``POST /admin/model``, ``SIGHUP``, and every worker of ``--workers N``.

The new file is loaded beside the serving one, off the event loop (``asyncio.to_thread``), through every start-up
check (size, sha256, metadata, golden rows, warm-up); only then is the worker's ``state.served`` replaced, in one
assignment. A request takes the served model once its body is read and uses it to the end, so it finishes on one
model and names its version. A failed check leaves the old model serving and answers 422 with the reason. A model
whose input features differ is refused unless ``force`` is given (clients would break). Over HTTP, a model comes
only from the model folder (``PULSE_MODEL_DIR``; default: the configured model's folder), and a refusal says nothing
of files outside it.

With several workers every swap goes through the control record (``server.ops.control``): the highest generation
wins, on every worker, including one the supervisor restarts. ``POST /admin/model`` answers 200 only once every live
worker serves that exact file (its sha256); 409 when a later swap superseded it; 504 naming the workers that did not
follow within ``WAIT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.model.loader import Model, ModelError, ModelFileError, load_model
from server.config.keys import KeyRing, KeysError
from server.core.errors import ApiError, NotReady
from server.monitoring.request_log import RequestLog
from server.monitoring.shadow import Shadow, check_shadow, load_shadow
from server.ops.control import CONTROL_FILE, SHADOW_CONTROL_FILE, Control, read_control, write_control

if TYPE_CHECKING:
    from server.core.served import ServedModel
    from server.pipeline.state import ServerState

logger = logging.getLogger(__name__)

WAIT_SECONDS = 30.0


class SwapRefused(ApiError):
    """422: the new model failed a check; the old one keeps serving."""

    status_code = 422


class SwapSuperseded(ApiError):
    """409: a later swap was asked before every worker served this one; the later one wins."""

    status_code = 409


class SwapTimeout(ApiError):
    """504: some live workers did not serve the new model in time."""

    status_code = 504


def allowed_model_path(path: Path, folder: Path) -> Path:
    """``path`` with every symlink resolved, when that is inside ``folder``; else a refusal that says nothing about
    the file (whether it exists, its size or its hash). The loader then opens it without following a symlink put in
    its place meanwhile, and without blocking on a FIFO."""
    try:
        resolved = Path(os.path.realpath(path))
        inside = resolved.is_relative_to(os.path.realpath(folder))
    except (ValueError, OSError):  # a NUL byte, a loop of symlinks
        inside = False
    if not inside:
        raise SwapRefused("model not swapped: the path is not a model file in the model folder (PULSE_MODEL_DIR)")
    return resolved


class ModelSwapper:
    """One worker's model swaps (one at a time, in the control record's order) and API key reloads."""

    def __init__(self, state: ServerState, serve: Callable[[Model], ServedModel], generation: int = 0) -> None:
        self.state = state
        self._serve = serve
        self._lock = asyncio.Lock()
        self.generation = generation  # of the control record this worker serves (0: the configured model)
        self.shadow_generation = 0  # of the shadow record this worker follows (0: the configured shadow)
        self._following = False
        self._following_shadow = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _load(self, path: Path, sha256: str, force: bool, from_client: bool = False) -> ServedModel:
        """Load and check ``path`` beside the serving model (call with the lock held); the ``ServedModel`` to serve."""
        settings = self.state.settings
        try:
            model = await asyncio.to_thread(
                load_model, path, sha256, settings.ort_threads, settings.max_model_bytes, not from_client
            )
        except ModelFileError as exc:
            if from_client:  # nothing about a file a client named: existence, size and hash stay unsaid
                refusal = "model not swapped: no servable model file at that path, or not the sha256 given"
                raise SwapRefused(refusal) from None
            raise SwapRefused(f"model not swapped: {exc}") from None
        except ModelError as exc:
            raise SwapRefused(f"model not swapped: {exc}") from None
        old = self.state.served
        if old is not None and model.info.features != old.info.features and not force:
            raise SwapRefused(
                f"model not swapped: its input features {list(model.info.features)} differ from the served "
                f'{list(old.info.features)}; clients would break (send "force": true to swap anyway)'
            )
        return self._serve(model)

    def _install(self, served: ServedModel, path: Path) -> None:
        request_log = self.state.request_log
        shadow = request_log.shadow if request_log is not None else None
        if request_log is not None and shadow is not None:
            try:  # a forced swap may change the features: a shadow that no longer fits would score wrong rows
                check_shadow(served.model, shadow.model)
            except ModelError as exc:
                request_log.shadow = None
                logger.error("shadow %s removed with the swap: %s", shadow.version, exc)
        self.state.serve(served)
        self.state.metrics.flush()
        info = served.info
        logger.info("model swapped version=%s sha256=%s path=%s", info.version, info.sha256[:12], path)

    async def admin_swap(self, path: Path, sha256: str, force: bool) -> tuple[ServedModel, dict[str, str]]:
        """``POST /admin/model``: serve ``path`` on every worker; the model and each live worker's version once
        every one serves its sha256 (:class:`SwapSuperseded`, :class:`SwapTimeout` otherwise)."""
        settings = self.state.settings
        path = allowed_model_path(path, settings.model_dir or settings.model_path.parent)
        served, control = await self._swap_everywhere(path, sha256, force, from_client=True)
        if control is None:
            return served, {str(self.state.metrics.pid): served.info.version}
        return served, await self._followed(control)

    async def _swap_everywhere(
        self, path: Path, sha256: str, force: bool, from_client: bool = False
    ) -> tuple[ServedModel, Control | None]:
        """Load and check ``path`` here, then (with several workers) ask every worker for it through the control
        record, and serve it. Only a model this worker accepted is ever asked of the others."""
        folder = self.state.settings.metrics_dir
        async with self._lock:
            served = await self._load(path, sha256, force, from_client)
            control = None
            if folder is not None:  # ordered among every swap asked of any worker, before this worker serves it
                control = write_control(folder, path, served.info.sha256, force)
                self.generation = control.generation
            self._install(served, path)
        return served, control

    async def _followed(self, control: Control, record: str = "info", name: str = CONTROL_FILE) -> dict[str, str]:
        """Each live worker's version once all serve ``control``'s model (``record``: where a worker's snapshot
        names it, ``info`` or ``shadow``); raises if superseded or late."""
        metrics = self.state.metrics
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            latest = read_control(self.state.settings.metrics_dir, name)
            if latest is not None and latest.generation != control.generation:
                raise SwapSuperseded(
                    f"a later swap (generation {latest.generation}, {latest.path.name}) superseded this one "
                    f"(generation {control.generation}) before every worker served it; the later one is served"
                )
            live = [s for s in metrics.snapshots() if metrics.is_live(s)]
            serving = {str(s["pid"]): s.get(record) or {} for s in live}
            behind = {
                pid: info.get("version", "")
                for pid, info in serving.items()
                if info.get("sha256", "") != control.sha256
            }
            if not behind:
                return {pid: info.get("version", "") for pid, info in serving.items()}
            if time.monotonic() > deadline:
                raise SwapTimeout(
                    f"workers {sorted(behind)} still serve {sorted(set(behind.values()))} after {WAIT_SECONDS:.0f} s; "
                    "the others serve the new model"
                )
            await asyncio.sleep(0.05)

    async def admin_shadow(self, path: Path | None, sha256: str, sample: float) -> tuple[Shadow | None, dict[str, str]]:
        """``POST /admin/shadow`` (``path``) and ``DELETE /admin/shadow`` (``None``): the candidate through every
        start-up check, then on every worker; each live worker's shadow version once all have it."""
        settings = self.state.settings
        shadow = None
        if path is not None:
            path = allowed_model_path(path, settings.model_dir or settings.model_path.parent)
            shadow = await self._load_shadow(path, sha256, sample, from_client=True)
        folder = settings.metrics_dir
        self._request_log().shadow = shadow
        self.state.metrics.flush()
        version = shadow.version if shadow else ""
        logger.info("shadow %s", f"set version={version} sample={sample} path={path}" if shadow else "removed")
        if folder is None:
            return shadow, {str(self.state.metrics.pid): version}
        control = write_control(
            folder, path or Path(), shadow.sha256 if shadow else "", False, sample, SHADOW_CONTROL_FILE
        )
        self.shadow_generation = control.generation
        return shadow, await self._followed(control, "shadow", SHADOW_CONTROL_FILE)

    async def _load_shadow(self, path: Path, sha256: str, sample: float, from_client: bool = False) -> Shadow:
        settings, served = self.state.settings, self.state.require_model()
        try:
            return await asyncio.to_thread(
                load_shadow, path, sha256, served.model, sample, settings.max_model_bytes, not from_client
            )
        except ModelFileError as exc:
            if from_client:
                raise SwapRefused(
                    "shadow not set: no servable model file at that path, or not the sha256 given"
                ) from None
            raise SwapRefused(f"shadow not set: {exc}") from None
        except ModelError as exc:
            raise SwapRefused(f"shadow not set: {exc}") from None

    async def _follow_shadow(self) -> None:
        """Take the latest shadow record's candidate (or none), as the worker that was asked did."""
        try:
            control = read_control(self.state.settings.metrics_dir, SHADOW_CONTROL_FILE)
            if control is None or control.generation <= self.shadow_generation:
                return
            self.shadow_generation = control.generation  # tried once, set or refused: never retried in a loop
            shadow = None
            if control.sha256:
                shadow = await self._load_shadow(control.path, control.sha256, control.sample)
            if self.shadow_generation != control.generation:
                return  # a newer record was taken while this one loaded (an admin call here): this one is stale
            self._request_log().shadow = shadow
        finally:
            self._following_shadow = False

    def _request_log(self) -> RequestLog:
        if self.state.request_log is None:
            raise NotReady("model not loaded yet")
        return self.state.request_log

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
        """Reload the keys and swap to the configured model path, as an admin swap does (checked here first, then
        ordered with every other swap through the control record); failures are logged."""
        self.reload_keys()
        settings = self.state.settings
        self._background(self._swap_everywhere(settings.model_path, settings.model_sha256, force=False))

    def poll_control(self) -> None:
        """Follow the control record when it has a generation this worker does not serve yet (metrics tick)."""
        shadow = read_control(self.state.settings.metrics_dir, SHADOW_CONTROL_FILE)
        if shadow is not None and shadow.generation > self.shadow_generation and not self._following_shadow:
            self._following_shadow = True
            self._background(self._follow_shadow())
        control = read_control(self.state.settings.metrics_dir)
        if control is None or control.generation <= self.generation or self._following:
            return
        self._following = True
        self._background(self._follow())

    async def _follow(self) -> None:
        """Serve the latest control record's model (re-read under the lock: only the latest matters)."""
        try:
            async with self._lock:
                control = read_control(self.state.settings.metrics_dir)
                if control is None or control.generation <= self.generation:
                    return
                self.generation = control.generation  # tried once, served or refused: never retried in a loop
                self.reload_keys()
                served = self.state.served
                if served is not None and control.sha256 and served.info.sha256 == control.sha256:
                    return
                self._install(await self._load(control.path, control.sha256, control.force), control.path)
        finally:
            self._following = False

    def _background(self, swap: Coroutine[Any, Any, object]) -> None:
        async def run() -> None:
            try:
                await swap
            except SwapRefused as exc:
                logger.error("%s", exc.detail)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
