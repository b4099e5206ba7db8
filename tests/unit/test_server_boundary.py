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
    "numba",
    "pyarrow",
}


def test_importing_the_server_loads_no_training_package() -> None:
    code = (
        "import sys, server.http.app, server.__main__, common.model.treeshap, server.explain.reasons; "
        f"print(sorted(set({sorted(FORBIDDEN)!r}) & {{m.split('.')[0] for m in sys.modules}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_loading_a_model_and_explaining_loads_no_training_package(behaviour_model: object) -> None:
    """Imports at run time count too: load a model with covers and explain a row in a fresh interpreter."""
    code = (
        "import sys, numpy as np; from pathlib import Path; from common.model.loader import load_model; "
        f"m = load_model(Path({str(behaviour_model)!r})); m.explainer.shap_values(np.ones((1, 6), np.float32)); "
        f"print(sorted(set({sorted(FORBIDDEN)!r}) & {{n.split('.')[0] for n in sys.modules}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
