"""The ONNX file reproduces scikit-learn, and says everything a consumer needs in its metadata."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from export.__main__ import main
from export.convert import convert_to_onnx, floor_float32
from export.parity import ParityError, check_parity, edge_rows

pytestmark = pytest.mark.parity


def _test_rows(artifacts: Path, features: list[str]) -> np.ndarray:
    table = pd.read_parquet(artifacts / "features.parquet")
    return table.loc[table["split"] == "test", features].to_numpy(np.float32)


def _assert_same_decisions(exported: Path, rows: str) -> None:
    """onnxruntime vs scikit-learn on the same float32 rows: 1e-6 and no decision flips."""
    artifacts = exported.parent
    metrics = json.loads((artifacts / "metrics.json").read_text())
    forest = joblib.load(artifacts / "model.joblib")
    X = _test_rows(artifacts, metrics["features"])
    if rows == "edge":  # checked here, not read back from parity.json (written only once export's check passed)
        X = edge_rows(forest, X, 10_000, seed=123)
    expected = forest.predict_proba(pd.DataFrame(X, columns=metrics["features"]))[:, 1]
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"features": X})[0][:, 1]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    threshold = metrics["threshold"]
    assert np.array_equal(got >= threshold, expected >= threshold)


@pytest.mark.parametrize("rows", ["test", "edge"])
@pytest.mark.parametrize("model", ["exported", "behaviour_model"])
def test_onnxruntime_matches_sklearn_on_the_same_float32_rows(
    model: str, rows: str, request: pytest.FixtureRequest
) -> None:
    _assert_same_decisions(request.getfixturevalue(model), rows)


def test_edge_rows_sit_on_and_beside_split_thresholds(exported: Path) -> None:
    forest = joblib.load(exported.parent / "model.joblib")
    X = _test_rows(exported.parent, list(forest.feature_names_in_))
    rows = edge_rows(forest, X, 5000, seed=0)
    tree = forest.estimators_[0].tree_
    feature, threshold = int(tree.feature[0]), float(tree.threshold[0])
    on = floor_float32(np.array([threshold]))[0]
    column = rows[:, feature]
    assert (column == on).any() and (column == np.nextafter(on, np.float32(np.inf))).any()
    assert (rows == 0).all(axis=1).any()


def _check_altered(exported: Path, attribute: str, alter: Callable[[list[float]], None]) -> None:
    """Run the parity check on the exported model after ``alter`` changed one tree-ensemble attribute."""
    artifacts = exported.parent
    metrics = json.loads((artifacts / "metrics.json").read_text())
    forest = joblib.load(artifacts / "model.joblib")
    model = onnx.load(str(exported))
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    alter(next(a for a in node.attribute if a.name == attribute).floats)
    check_parity(forest, model, _test_rows(artifacts, metrics["features"]), metrics["threshold"])


def test_a_perturbed_model_fails_parity(exported: Path) -> None:
    def one_leaf_says_something_else(weights: list[float]) -> None:
        weights[0] += 0.05

    with pytest.raises(ParityError, match="parity failed"):
        _check_altered(exported, "class_weights", one_leaf_says_something_else)


def test_a_shifted_split_threshold_fails_parity(exported: Path) -> None:
    def one_float32_step_up(values: list[float]) -> None:
        values[0] = float(np.nextafter(np.float32(values[0]), np.float32(np.inf)))

    with pytest.raises(ParityError):
        _check_altered(exported, "nodes_values", one_float32_step_up)


def test_floor_float32_never_rounds_up() -> None:
    values = np.random.default_rng(0).random(10_000) * 1000
    floored = floor_float32(values)
    assert (floored.astype(np.float64) <= values).all()
    assert (np.nextafter(floored, np.float32(np.inf)).astype(np.float64) > values).all()


def test_metadata_round_trips(exported: Path) -> None:
    metrics = json.loads((exported.parent / "metrics.json").read_text())
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["features"]) == metrics["features"]
    assert float(meta["threshold"]) == metrics["threshold"]
    assert meta["model_version"] == metrics["model_version"]
    assert meta["trained_at"] == metrics["trained_at"]
    assert json.loads(meta["test_metrics"]) == metrics["test"]
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert session.get_inputs()[0].shape[1] == len(metrics["features"])
    assert [o.name for o in session.get_outputs()] == ["label", "probabilities", "contributions"]
    golden = json.loads(meta["golden_rows"])
    got = session.run(["probabilities"], {"features": np.array(golden["inputs"], dtype=np.float32)})[0][:, 1]
    np.testing.assert_allclose(got, golden["probabilities"], rtol=0, atol=1e-6)


def test_sha256_file_matches_the_model(exported: Path) -> None:
    digest, name = (exported.parent / "model.onnx.sha256").read_text().split()
    assert name == "model.onnx"
    assert digest == hashlib.sha256(exported.read_bytes()).hexdigest()


def test_conversion_keeps_the_probabilities_without_zipmap(exported: Path) -> None:
    forest = joblib.load(exported.parent / "model.joblib")
    model = convert_to_onnx(forest, {"model_version": "x"})
    assert "ZipMap" not in {n.op_type for n in model.graph.node}
    assert model.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.fixture
def artifacts_copy(trained: Path, exported: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "artifacts"
    shutil.copytree(trained, copy)
    (copy / "model.onnx").unlink()
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.joblib").unlink(), "does not exist"),
        (lambda d: (d / "model.joblib").write_bytes(b"\x80\x04garbage"), "cannot load model"),
        (lambda d: joblib.dump({"not": "a forest"}, d / "model.joblib"), "not a RandomForestClassifier"),
        (lambda d: (d / "metrics.json").write_text('{"features": []}'), "has no 'threshold'"),
        (lambda d: (d / "metrics.json").write_text("{"), "not valid JSON"),
    ],
)
def test_bad_artifacts_are_one_line_errors_and_write_no_model(
    artifacts_copy: Path, capsys: pytest.CaptureFixture[str], damage: object, message: str
) -> None:
    damage(artifacts_copy)  # type: ignore[operator]
    assert main(["--artifacts", str(artifacts_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (artifacts_copy / "model.onnx").exists()


def test_exported_files_are_readable_by_other_users(exported: Path) -> None:
    for name in ("model.onnx", "model.onnx.sha256", "parity.json", "golden_rows.json", "metrics.json"):
        assert (exported.parent / name).stat().st_mode & 0o044 == 0o044, name
