"""``python -m server --model artifacts/model.onnx --host 127.0.0.1 --port 8000 [--workers N]``.

Flags override the ``PULSE_*`` environment; the settings are read once here and handed to every worker process
(pickled with the worker's entry point).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging.config
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from common.model.loader import Model, ModelError, load_model, read_model_bytes
from server.config.keys import KeyRing, KeysError
from server.config.settings import Settings, SettingsError
from server.monitoring.log_file import RequestLogError, check_request_log_path
from server.monitoring.shadow import check_shadow
from server.monitoring.tracing import TraceConfig, TracingConfigError
from server.ops.control import pin_model
from server.ops.logs import logging_config

logger = logging.getLogger("server")
PROBE_ROOM = 64  # connections between PULSE_MAX_CONNECTIONS and the descriptor ceiling: probes only

FLAGS = {  # flag -> settings field; every other setting comes from its PULSE_* variable
    "model": "model_path",
    "host": "host",
    "port": "port",
    "workers": "workers",
    "grpc_port": "grpc_port",
    "log_level": "log_level",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve model.onnx over HTTP. Every setting is also a PULSE_* environment variable "
        "(see the README); a flag wins over its variable.",
    )
    defaults = Settings()
    parser.add_argument("--model", help=f"path to model.onnx (PULSE_MODEL_PATH; default {defaults.model_path})")
    parser.add_argument("--host", help=f"address to listen on (PULSE_HOST; default {defaults.host})")
    parser.add_argument("--port", help=f"TCP port, 0 picks a free one (PULSE_PORT; default {defaults.port})")
    parser.add_argument(
        "--workers",
        help=f"processes, each with its own onnxruntime session (PULSE_WORKERS; default {defaults.workers})",
    )
    parser.add_argument(
        "--grpc-port", help="serve the V2 gRPC service on this port too (PULSE_GRPC_PORT; default: off)"
    )
    parser.add_argument(
        "--log-level", help=f"critical/error/warning/info/debug (PULSE_LOG_LEVEL; default {defaults.log_level})"
    )
    return parser


def read_settings(argv: list[str] | None) -> Settings:
    """The environment's settings with the command line's flags on top."""
    args = build_parser().parse_args(argv)
    env = Settings.from_env()
    flags = {field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag) is not None}
    from_flags = Settings.from_strings(flags)
    return Settings(**{**_as_dict(env), **{field: getattr(from_flags, field) for field in flags}})


def _as_dict(settings: Settings) -> dict[str, object]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def main(argv: list[str] | None = None) -> int:
    try:
        settings = read_settings(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = logging_config(settings.log_level)
    logging.config.dictConfig(config)
    try:  # fail fast, with one line, before any worker starts
        check_request_log_path(settings.request_log)
        check_tls(settings)
        if settings.api_keys_file is not None:
            KeyRing.load(settings.api_keys_file)
        TraceConfig.from_env()  # OTEL_* variables: each worker reads them again when it starts
        model = load_model(settings.model_path, settings.model_sha256, settings.ort_threads, settings.max_model_bytes)
        if settings.shadow_model is not None:
            check_shadow(model, load_model(settings.shadow_model, "", 1, settings.max_model_bytes))
    except (ModelError, RequestLogError, KeysError, SettingsError, TracingConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        settings, made_here = _with_metrics_folder(settings)
    except OSError as exc:
        folder = str(settings.metrics_dir)
        print(f"error: metrics folder {folder!r} (PULSE_METRICS_DIR): {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if settings.workers > 1 and settings.metrics_dir is not None:
            data = read_model_bytes(settings.model_path, model.info.sha256, settings.max_model_bytes)
            pin_model(settings.metrics_dir, data, model.info.sha256)
        return _serve(settings, model, config)
    except ModelError as exc:  # the file changed between the check and the copy
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if made_here is not None:
            shutil.rmtree(made_here, ignore_errors=True)


def _serve(settings: Settings, model: Model, config: dict[str, Any]) -> int:
    from server.http.fast.listener import bind_socket
    from server.http.worker import run_worker, worker_process

    if settings.http == "fast":
        settings = _with_probe_room(settings)
    logger.info("http mode %s", settings.http)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 2
    if settings.workers == 1:  # one worker serves the model loaded above, in this process
        return run_worker(settings, [sock], model)
    from server.ops.supervisor import Supervisor

    return Supervisor(settings, worker_process, (settings, config), [sock]).run()


def _with_probe_room(settings: Settings) -> Settings:
    """``PULSE_MAX_CONNECTIONS`` lowered, if need be, to leave probes room under the descriptor ceiling."""
    from server.http.fast.framing import connection_ceiling

    ceiling = connection_ceiling()  # workers inherit the raised descriptor limit
    if settings.max_connections > ceiling - PROBE_ROOM:
        logger.warning(
            "PULSE_MAX_CONNECTIONS=%d leaves no room for probes under %d descriptors: using %d",
            settings.max_connections,
            ceiling,
            ceiling - PROBE_ROOM,
        )
        settings = dataclasses.replace(settings, max_connections=max(1, ceiling - PROBE_ROOM))
    return settings


def check_tls(settings: Settings) -> None:
    """Both TLS files or neither, each readable; every worker loads them."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise SettingsError("PULSE_TLS_CERT and PULSE_TLS_KEY go together: set both, or neither for plain HTTP")
    for variable, path in (("PULSE_TLS_CERT", settings.tls_cert), ("PULSE_TLS_KEY", settings.tls_key)):
        if path is not None and not path.is_file():
            raise SettingsError(f"{variable} has value {str(path)!r}: not a readable file")


def _with_metrics_folder(settings: Settings) -> tuple[Settings, Path | None]:
    """N workers sum their metrics through snapshot files in one folder: in memory (/dev/shm) when there is one.
    Returns the settings to use and the folder made here (to remove at exit), if any."""
    if settings.metrics_dir is not None:  # the user's folder: what an earlier run left there is not this run's
        from server.ops.control import clear_folder

        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        clear_folder(settings.metrics_dir)
        return settings, None
    if settings.workers == 1:
        return settings, None
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="pulse-metrics-", dir=shm if shm.is_dir() else None))
    return dataclasses.replace(settings, metrics_dir=folder), folder


if __name__ == "__main__":
    sys.exit(main())
