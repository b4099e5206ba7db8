"""Reasons computed by the model file: parity, size, load time and speed, for the default forest and a depth-12 one.

    python -m benchmarks explain [--artifacts artifacts]

For each forest: ``model.onnx`` with and without the contributions graph (bytes, load time through the server's
checked loader); max |contribution - shap.TreeExplainer| over the test rows and 2,000 edge rows on onnxruntime and
on the ``onnx`` package's reference evaluator, and additivity; one row and 1000-row batches explained in-process on
one thread by the graph (what the server and ``score run --explain`` call), by the per-row algorithm in Python
(the fallback), and by ``shap.TreeExplainer`` (C++); and onnxruntime's own profile of a 128-row call (the chunk
``Model.explain`` runs): what each operator of the graph costs.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from common.model.loader import load_model
from common.model.treeshap import CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT
from export.convert import convert_to_onnx
from export.explain import tree_covers
from export.parity import edge_rows
from export.shap_graph import attach_contributions


def _seconds(call: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``call`` (after a few unmeasured calls)."""
    for _ in range(3):
        call()
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _files(forest: RandomForestClassifier, features: list[str], folder: Path) -> dict[str, Path]:
    """The forest as model.onnx without and with the graph (the metadata the loader needs, golden rows aside)."""
    paths = {}
    for name in ("plain", "explained"):
        metadata: dict[str, Any] = {"features": features, "threshold": 0.5, "model_version": f"bench-{name}"}
        metadata["trained_at"] = "2026-01-01T00:00:00Z"
        metadata["tree_covers"] = tree_covers(forest)
        model = convert_to_onnx(forest, metadata)
        if name == "explained":
            base = attach_contributions(model, metadata["tree_covers"], len(features))
            assert base is not None, "the forest passes the table caps"
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(model.SerializeToString())
    return paths


def _profile(path: Path, X: np.ndarray, repeat: int = 20) -> list[tuple[str, float]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling, options.log_severity_level = 1, True, 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"features": X, EXPLAIN_INPUT: np.array(True)}
    for _ in range(repeat):
        session.run([CONTRIBUTIONS_OUTPUT], feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    cost: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["args"].get("op_name"):
            if event["args"]["op_name"] != "If":  # the branch's own nodes are listed one by one
                cost[event["args"]["op_name"]] += event["dur"]
    total = sum(cost.values())
    return [(op, round(100 * us / total, 1)) for op, us in cost.most_common()]


def measure(forest: RandomForestClassifier, features: list[str], X_test: np.ndarray, folder: Path) -> dict[str, Any]:
    import shap
    from onnx import load
    from onnx.reference import ReferenceEvaluator

    paths = _files(forest, features, folder)
    result: dict[str, Any] = {
        "trees": len(forest.estimators_),
        "max_depth": max(t.get_depth() for t in forest.estimators_),
    }
    for name, path in paths.items():
        started = time.perf_counter()
        model = load_model(path)
        result[f"{name}_load_s"] = round(time.perf_counter() - started, 3)
        result[f"{name}_bytes"] = path.stat().st_size
    model = load_model(paths["explained"])
    assert model.explainer is not None and model.explains_in_graph
    X = np.concatenate([X_test, edge_rows(forest, X_test, 2000, seed=3)])
    reference = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    frame = pd.DataFrame(X.astype(np.float64), columns=features)
    values = np.asarray(reference.shap_values(frame))
    expected = values[:, :, 1] if values.ndim == 3 else values[1]
    base = float(np.ravel(reference.expected_value)[1])
    _, got = model.explain(X)
    feed = {"features": X, EXPLAIN_INPUT: np.array(True)}
    evaluated = np.asarray(ReferenceEvaluator(load(str(paths["explained"]))).run([CONTRIBUTIONS_OUTPUT], feed)[0])  # type: ignore[index]
    result["parity_rows"] = len(X)
    result["max_abs_diff_onnxruntime"] = float(np.max(np.abs(got - expected)))
    result["max_abs_diff_reference_evaluator"] = float(np.max(np.abs(evaluated - expected)))
    result["additivity"] = float(np.max(np.abs(base + got.sum(axis=1) - model.churn_probability(X))))

    batch = np.ascontiguousarray(np.resize(X_test, (1000, len(features))))
    one = batch[:1]
    assert model.explainer is not None
    plain = load_model(paths["plain"])
    result["one_row_us"] = {
        "predict_without_graph": _seconds(lambda: plain.predict_proba(one), 2000) * 1e6,
        "predict": _seconds(lambda: model.predict_proba(one), 2000) * 1e6,
        "graph": _seconds(lambda: model.explain(one), 2000) * 1e6,
        "per_row_python": _seconds(lambda: model.explainer.shap_values(one), 2000) * 1e6,  # type: ignore[union-attr]
    }
    frame = pd.DataFrame(batch.astype(np.float64), columns=features)
    result["rows_per_s_1000"] = {
        "graph": 1000 / _seconds(lambda: model.explain(batch), 30),
        "per_row_python": 1000 / _seconds(lambda: model.explainer.shap_values(batch), 10),  # type: ignore[union-attr]
        "shap_tree_explainer": 1000 / _seconds(lambda: reference.shap_values(frame), 5),
        "predict": 1000 / _seconds(lambda: model.predict_proba(batch), 100),
    }
    result["profile_128_rows_percent"] = _profile(paths["explained"], batch[:128])  # a chunk, as explain() runs
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifacts: Path = args.artifacts
    metrics = json.loads((artifacts / "metrics.json").read_text())
    features = list(metrics["features"])
    table = pd.read_parquet(artifacts / "features.parquet")
    train = table[table["split"] == "train"]
    X_test = table.loc[table["split"] == "test", features].to_numpy(np.float32)
    import joblib

    default = joblib.load(artifacts / "model.joblib")
    deep = RandomForestClassifier(
        n_estimators=default.n_estimators, max_depth=12, min_samples_leaf=2, random_state=0, n_jobs=1
    ).fit(train[features], train["churned"])
    with tempfile.TemporaryDirectory(prefix="pulse-explain-") as folder:
        return {
            "default": measure(default, features, X_test, Path(folder)),
            "depth_12": measure(deep, features, X_test, Path(folder)),
            "onnxruntime": ort.__version__,
        }


def add_parser(commands: Any) -> None:
    """``python -m benchmarks explain``."""
    parser = commands.add_parser(
        "explain",
        help="reasons from the model file: parity on two runtimes, size, load time, speed against shap",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder of a trained, exported run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for explain.json")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explain.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0
