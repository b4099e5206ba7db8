"""Data drift between the training features and what production sends (Evidently 0.7 ``Report`` API).

Exit codes for schedulers: 0 no drift, 1 drift, 2 error (bad input; nothing is written).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.io import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

MIN_ROWS = 30  # below this, distribution tests say nothing useful
PROBABILITY = "churn_probability"


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


def load_reference(artifacts: Path) -> tuple[pd.DataFrame, list[str]]:
    """The training rows of ``features.parquet`` and the model's feature names (from ``metrics.json``)."""
    try:
        features = list(json.loads((artifacts / "metrics.json").read_text())["features"])
        table = pd.read_parquet(artifacts / "features.parquet")
    except FileNotFoundError as exc:
        raise ValueError(
            f"reference {str(artifacts)!r} lacks {Path(str(exc.filename)).name}; run `python -m train fit` first"
        ) from exc
    reference = table.loc[table["split"] == "train", features] if "split" in table else table[features]
    return reference.reset_index(drop=True), features


def load_current(path: Path, features: list[str]) -> pd.DataFrame:
    """Production rows: the server's JSONL request log, or a CSV/Parquet file with the feature columns."""
    if not path.is_file():
        raise ValueError(f"current data {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            frame = pd.read_json(path, lines=True) if path.stat().st_size else pd.DataFrame()
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise ValueError(f"current data {str(path)!r}: unknown format (expected .jsonl, .csv or .parquet)")
    except (ValueError, OSError) as exc:
        if "unknown format" in str(exc):
            raise
        raise ValueError(f"cannot read current data {str(path)!r}: {str(exc).splitlines()[0]}") from exc
    if frame.empty:
        raise ValueError(f"current data {str(path)!r} is empty")
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise ValueError(f"current data lacks the model's feature columns {missing} (it has {list(frame.columns)})")
    columns = features + ([PROBABILITY] if PROBABILITY in frame.columns else [])
    current = frame[columns]
    for name in columns:
        if not pd.api.types.is_numeric_dtype(current[name]):
            raise ValueError(f"current data column {name!r} is not numeric")
    if len(current) < MIN_ROWS:
        raise ValueError(f"current data has {len(current)} rows; a drift test needs at least {MIN_ROWS}")
    return current.reset_index(drop=True)


def reference_probabilities(artifacts: Path, reference: pd.DataFrame) -> pd.Series | None:
    """The served model's scores on the reference rows, when ``model.onnx`` is there."""
    model = artifacts / "model.onnx"
    if not model.is_file():
        return None
    from common.model.loader import load_model  # the one way every tool opens a model (checks, no warnings)

    served = load_model(model)
    proba = served.churn_probability(reference[list(served.info.features)].to_numpy(np.float32))
    return pd.Series(proba, name=PROBABILITY)


def column_drifts(snapshot: dict[str, Any]) -> list[ColumnDrift]:
    """Per-column results from an Evidently snapshot's ``ValueDrift`` metrics."""
    drifts = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        method, threshold, score = config["method"], float(config["threshold"]), float(metric["value"])
        # p-value tests flag drift below the threshold; distances (Wasserstein, PSI, ...) at or above it.
        drifted = score < threshold if "p_value" in method else score >= threshold
        drifts.append(ColumnDrift(config["column"], method, score, threshold, drifted))
    return drifts


def _plot(reference: pd.Series, current: pd.Series, drift: ColumnDrift, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    both = pd.concat([reference, current]).to_numpy()
    bins = np.linspace(both.min(), np.quantile(both, 0.99), 41).tolist()  # a long tail would flatten the picture
    ax.hist(reference, bins=bins, density=True, alpha=0.55, label=f"reference (n={len(reference)})")
    ax.hist(current, bins=bins, density=True, alpha=0.55, label=f"current (n={len(current)})")
    ax.set(
        title=f"{drift.column}: {drift.method} = {drift.score:.3g} (threshold {drift.threshold:g})", ylabel="density"
    )
    ax.title.set_fontsize(9)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_drift(reference_dir: Path, current_path: Path, out: Path, drift_share: float = 0.0) -> int:
    """Write the report, print one summary line, return 0 (no drift) or 1 (drift).

    Drift means: at least one feature drifted and the drifted share is at least ``drift_share``, or the predicted
    probability drifted.
    """
    reference, features = load_reference(reference_dir)
    current = load_current(current_path, features)  # bad input is reported before Evidently's seconds of import
    try:
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except ImportError as exc:  # pragma: no cover - evidently is in the train extra
        raise RuntimeError("train.drift needs evidently: pip install '.[train]'") from exc

    columns = list(features)
    if PROBABILITY in current.columns:
        ref_proba = reference_probabilities(reference_dir, reference)
        if ref_proba is not None:
            reference = reference.assign(**{PROBABILITY: ref_proba})
            columns.append(PROBABILITY)
    current = current[columns]

    snapshot = Report([DataDriftPreset(columns=columns)]).run(current, reference[columns])
    result = snapshot.dict()
    drifts = column_drifts(result)
    drifted_features = [d.column for d in drifts if d.drifted and d.column in features]
    share = len(drifted_features) / len(features)
    prediction = next((d for d in drifts if d.column == PROBABILITY), None)
    dataset_drift = (bool(drifted_features) and share >= drift_share) or bool(prediction and prediction.drifted)
    summary = {
        "dataset_drift": dataset_drift,
        "drift_share_threshold": drift_share,
        "drifted_features": drifted_features,
        "drifted_share": share,
        "prediction_drift": None if prediction is None else prediction.drifted,
        "columns": [asdict(d) for d in drifts],
        "n_reference": len(reference),
        "n_current": len(current),
        "current": str(current_path),
    }

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("drift_*.png"):
        stale.unlink()
    for drift in drifts:
        if drift.drifted:
            _plot(reference[drift.column], current[drift.column], drift, out / f"drift_{drift.column}.png")
    with atomic_path(out / "data_drift_report.html") as tmp:
        snapshot.save_html(str(tmp))
    write_text_atomic(
        out / "data_drift_report.json",
        json.dumps({"summary": summary, "evidently": result}, indent=2, default=str) + "\n",
    )
    prediction_text = "" if prediction is None else f"; prediction drift: {'yes' if prediction.drifted else 'no'}"
    print(
        f"{'DRIFT' if dataset_drift else 'no drift'}: {len(drifted_features)} of {len(features)} features drifted "
        f"(share {share:.2f})"
        + (f": {', '.join(drifted_features)}" if drifted_features else "")
        + prediction_text
        + f" -> {out}/"
    )
    return 1 if dataset_drift else 0
