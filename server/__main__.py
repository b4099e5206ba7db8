"""``python -m server --model artifacts/model.onnx --host 127.0.0.1 --port 8000 [--workers N]``."""

from __future__ import annotations

import argparse
import logging.config
import os
import sys

from server.logs import logging_config
from server.model import ModelError, load_model
from server.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="Serve model.onnx over HTTP.")
    parser.add_argument("--model", help="path to model.onnx (PULSE_MODEL_PATH)")
    parser.add_argument("--host", help="PULSE_HOST, default 127.0.0.1")
    parser.add_argument("--port", help="PULSE_PORT, default 8000")
    parser.add_argument("--workers", help="processes, one onnxruntime session each (PULSE_WORKERS)")
    parser.add_argument("--log-level", help="PULSE_LOG_LEVEL, default info")
    args = parser.parse_args(argv)
    for flag, value in (
        ("MODEL_PATH", args.model),
        ("HOST", args.host),
        ("PORT", args.port),
        ("WORKERS", args.workers),
        ("LOG_LEVEL", args.log_level),
    ):
        if value is not None:
            os.environ["PULSE_" + flag] = value  # workers read their settings from the environment
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = logging_config(settings.log_level)
    logging.config.dictConfig(config)
    try:  # fail fast, with one line, before any worker starts
        load_model(settings.model_path, settings.model_sha256, settings.ort_threads)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        "server.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=config,
        access_log=settings.access_log,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
