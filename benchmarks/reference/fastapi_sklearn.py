"""The original design: FastAPI + pydantic + a one-row DataFrame + scikit-learn ``predict_proba``."""

from __future__ import annotations

import sys

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.reference._run import serve


class Features(BaseModel):
    total_events: float
    total_sessions: float
    avg_events_per_session: float
    revenue_per_session: float
    active_days: float


def _model_path(argv: list[str]) -> str:
    return argv[argv.index("--model") + 1] if "--model" in argv else "artifacts/model.joblib"


model = joblib.load(_model_path(sys.argv))
THRESHOLD = 0.5
app = FastAPI()


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/predict")
def predict(features: Features) -> dict[str, object]:
    frame = pd.DataFrame([features.model_dump()])
    probability = float(model.predict_proba(frame)[0, 1])
    return {
        "churn_probability": probability,
        "churn": probability >= THRESHOLD,
        "threshold": THRESHOLD,
        "model_version": "sklearn",
    }


if __name__ == "__main__":
    serve(app)
