"""The original design: FastAPI + pydantic + a one-row DataFrame + scikit-learn ``predict_proba``."""

from __future__ import annotations

import sys
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import create_model

from benchmarks.reference._run import serve


def _model_path(argv: list[str]) -> str:
    return argv[argv.index("--model") + 1] if "--model" in argv else "artifacts/model.joblib"


model = joblib.load(_model_path(sys.argv))
# The original design declared the five seed fields by hand; declared from the model here, so that it serves a model
# trained on any feature set (a hand-written class would drop the other fields and the forest would refuse the row).
FIELDS: dict[str, Any] = {str(name): (float, ...) for name in model.feature_names_in_}
Features = create_model("Features", **FIELDS)
THRESHOLD = 0.5
app = FastAPI()


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/predict")
def predict(features: Features) -> dict[str, object]:  # type: ignore[valid-type]
    frame = pd.DataFrame([features.model_dump()])  # type: ignore[attr-defined]
    probability = float(model.predict_proba(frame)[0, 1])
    return {
        "churn_probability": probability,
        "churn": probability >= THRESHOLD,
        "threshold": THRESHOLD,
        "model_version": "sklearn",
    }


if __name__ == "__main__":
    serve(app)
