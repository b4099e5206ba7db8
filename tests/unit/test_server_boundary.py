"""The server imports only the serve extra: a fresh interpreter proves it."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = {
    "sklearn",
    "pandas",
    "scipy",
    "shap",
    "evidently",
    "matplotlib",
    "skl2onnx",
    "duckdb",
    "train",
    "export",
    "onnx",
}


def test_importing_the_server_loads_no_training_package() -> None:
    code = (
        "import sys, server.app, server.__main__; "
        f"print(sorted(set({sorted(FORBIDDEN)!r}) & {{m.split('.')[0] for m in sys.modules}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
