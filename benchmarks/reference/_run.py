"""Shared command line for the reference servers: same uvicorn settings as ours."""

from __future__ import annotations

import argparse
from typing import Any


def serve(app: Any, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="artifacts/model.joblib")
    args, _ = parser.parse_known_args(argv)
    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
