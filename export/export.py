"""Read training's artifacts, convert, prove parity, and write model.onnx with its sha256 and golden rows."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.utils.validation import check_is_fitted

from export.convert import INPUT_NAME, LABEL_OUTPUT, PROBABILITY_OUTPUT, convert_to_onnx, sha256_hex
from export.explain import golden_contributions, tree_covers
from export.parity import ParityError, check_parity, sklearn_probabilities
from export.reference import reference_distributions
from export.shap_graph import attach_contributions

logger = logging.getLogger(__name__)

N_GOLDEN = 16


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from the server's user
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def load_forest(path: Path) -> RandomForestClassifier:
    """Load ``model.joblib`` and check it is a fitted RandomForestClassifier."""
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist; run `python -m train fit` first")
    try:
        forest = joblib.load(path)
    except Exception as exc:  # unpickling fails in many ways; all mean the same here
        raise ValueError(f"cannot load model {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(forest, RandomForestClassifier):
        raise ValueError(f"{str(path)!r} holds a {type(forest).__name__}, not a RandomForestClassifier")
    check_is_fitted(forest)
    if list(forest.classes_) != [False, True] and list(forest.classes_) != [0, 1]:
        raise ValueError(f"expected a binary churn model with classes [False, True], got {list(forest.classes_)}")
    return forest


def load_metrics(path: Path) -> dict[str, Any]:
    """Load ``metrics.json`` and check the keys the model's metadata is made of."""
    try:
        metrics: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ValueError(f"metrics file {str(path)!r} does not exist; run `python -m train fit` first") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"metrics file {str(path)!r} is not valid JSON: {exc}") from exc
    for key in ("threshold", "features", "feature_set", "feature_schema", "model_version", "trained_at", "test"):
        if key not in metrics:
            raise ValueError(f"metrics file {str(path)!r} has no {key!r}")
    if [item.get("name") for item in metrics["feature_schema"]] != list(metrics["features"]):
        raise ValueError(f"metrics file {str(path)!r}: 'feature_schema' does not describe 'features' in order")
    threshold = metrics["threshold"]
    if not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
        raise ValueError(f"metrics file {str(path)!r}: threshold must be a number in (0, 1), got {threshold!r}")
    return metrics


def model_metadata(metrics: dict[str, Any], forest: RandomForestClassifier, golden: dict[str, Any]) -> dict[str, Any]:
    """What any consumer needs, as ONNX ``metadata_props`` (non-strings become JSON)."""
    return {
        "feature_set": metrics["feature_set"],
        "features": metrics["features"],
        "feature_schema": metrics["feature_schema"],  # name, sql, description, unit, minimum: as training defined it
        "input_name": INPUT_NAME,
        "label_output": LABEL_OUTPUT,
        "probability_output": PROBABILITY_OUTPUT,
        "positive_class_index": 1,
        "threshold": repr(float(metrics["threshold"])),
        "threshold_rule": "churn = probabilities[:, 1] >= threshold",
        "model_version": metrics["model_version"],
        "trained_at": metrics["trained_at"],
        "test_metrics": metrics["test"],
        "train_summary": {
            k: metrics[k]
            for k in ("n_users", "n_train", "n_test", "churn_rate", "cutoff", "label_days", "train_feature_summary")
            if k in metrics
        },
        "params": metrics.get("params", forest.get_params()),
        "node_count": int(sum(t.tree_.node_count for t in forest.estimators_)),
        "golden_rows": golden,
    }


def export_model(artifacts: Path) -> dict[str, Any]:
    """Write ``model.onnx``, ``model.onnx.sha256``, ``golden_rows.json`` and ``parity.json`` into ``artifacts``."""
    forest = load_forest(artifacts / "model.joblib")
    metrics = load_metrics(artifacts / "metrics.json")
    features = list(metrics["features"])
    if forest.n_features_in_ != len(features):
        raise ValueError(f"model expects {forest.n_features_in_} features, metrics.json lists {len(features)}")
    try:
        table = pd.read_parquet(artifacts / "features.parquet")
        X_test = table.loc[table["split"] == "test", features].to_numpy(np.float32)
        X_train = table.loc[table["split"] == "train", features].to_numpy(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read the test rows from {str(artifacts / 'features.parquet')!r}: {exc}") from exc

    golden_X = X_test[:N_GOLDEN]
    golden = {"inputs": golden_X.tolist(), "probabilities": sklearn_probabilities(forest, golden_X).tolist()}
    metadata = model_metadata(metrics, forest, golden)
    metadata["tree_covers"] = tree_covers(forest)
    metadata["golden_shap"] = golden_contributions(forest, golden_X)
    metadata["reference_bins"] = reference_distributions(X_train, features, sklearn_probabilities(forest, X_train))
    onnx_model = convert_to_onnx(forest, metadata)
    base_value = attach_contributions(onnx_model, metadata["tree_covers"], len(features))
    if base_value is None:
        logger.warning("the forest's SHAP tables pass the caps: model.onnx has no 'contributions' output")
    else:
        onnx.helper.set_model_props(onnx_model, {**_props(onnx_model), "shap_base_value": repr(base_value)})
        onnx.checker.check_model(onnx_model)
    data = onnx_model.SerializeToString()
    try:
        report = check_parity(forest, onnx_model, X_test, float(metrics["threshold"]))
    except ParityError as exc:
        _write_atomic(artifacts / "parity.json", (json.dumps(exc.report, indent=2) + "\n").encode())
        raise

    digest = sha256_hex(data)
    report.update({"model_bytes": len(data), "node_count": metadata["node_count"], "sha256": digest})
    _write_atomic(artifacts / "parity.json", (json.dumps(report, indent=2) + "\n").encode())
    _write_atomic(
        artifacts / "golden_rows.json", (json.dumps({"features": features, **golden}, indent=2) + "\n").encode()
    )
    _write_atomic(artifacts / "model.onnx", data)
    _write_atomic(artifacts / "model.onnx.sha256", f"{digest}  model.onnx\n".encode())
    logger.info("exported model.onnx bytes=%d sha256=%s onnxruntime=%s", len(data), digest, ort.__version__)
    return report
