"""A model that cannot be served stops start-up with one line saying why."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from common.model.loader import ModelError, load_model, session_options
from common.model.onnx_graph import without_output
from common.model.treeshap import CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT


@pytest.fixture
def model_copy(exported: Path, tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    shutil.copy(exported, path)
    shutil.copy(exported.with_name("model.onnx.sha256"), tmp_path / "model.onnx.sha256")
    return path


def test_loads_and_reads_everything_from_metadata(model_copy: Path) -> None:
    model = load_model(model_copy)
    info = model.info
    assert info.features[0] == "total_events" and len(info.features) == 5
    assert 0 < info.threshold < 1
    assert info.version.startswith("rf-")
    assert info.minimums == (0.0,) * 5


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "model.onnx")


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_model_path_that_is_not_a_regular_file_is_refused_before_reading(tmp_path: Path, kind: str) -> None:
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "model.fifo", "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    with pytest.raises(ModelError, match="is not a regular file"):
        load_model(path)


def test_a_model_file_over_the_size_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    sparse = tmp_path / "huge.onnx"
    with open(sparse, "wb") as file:
        file.truncate(8 * 1024**3)  # 8 GB of holes: reading it would take 8 GB of memory
    with pytest.raises(ModelError, match=r"is 8589934592 bytes, over PULSE_MAX_MODEL_BYTES=536870912"):
        load_model(sparse, max_bytes=512 * 1024 * 1024)


def test_garbage_file_with_matching_sha_is_not_loadable(model_copy: Path) -> None:
    model_copy.write_bytes(b"garbage" * 100)
    model_copy.with_name("model.onnx.sha256").unlink()
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(model_copy)


def test_truncated_file_fails_its_sha256(model_copy: Path) -> None:
    model_copy.write_bytes(model_copy.read_bytes()[:1000])
    with pytest.raises(ModelError, match="has sha256"):
        load_model(model_copy)


def test_explicit_sha256_must_match(model_copy: Path) -> None:
    with pytest.raises(ModelError, match="expected 000000000000"):
        load_model(model_copy, expected_sha256="0" * 64)


def _rewrite(path: Path, **props: str) -> None:
    model = onnx.load(str(path))
    current = {p.key: p.value for p in model.metadata_props}
    current.update(props)
    for key in [k for k, v in props.items() if v == ""]:
        del current[key]
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, current)
    onnx.save(model, str(path))
    path.with_name("model.onnx.sha256").unlink()


def test_golden_rows_that_do_not_reproduce_stop_start_up(model_copy: Path) -> None:
    _rewrite(model_copy, golden_rows='{"inputs": [[1, 1, 1, 1, 1]], "probabilities": [2.0]}')
    with pytest.raises(ModelError, match="golden rows do not reproduce"):
        load_model(model_copy)


GOLDEN_ROW = "[1, 2, 3, 4, 5]"


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"threshold": ""}, "model metadata lacks 'threshold'"),
        ({"threshold": "high"}, "model metadata 'threshold' = 'high' is not a number"),
        ({"model_version": ""}, "model metadata lacks 'model_version'"),
        ({"golden_rows": '{"inputs": [' + GOLDEN_ROW + "]}"}, "'golden_rows' must be an object with 'inputs' and"),
        ({"golden_rows": '{"inputs": [[1, 2]], "probabilities": [0.5]}'}, "'golden_rows' inputs must be rows of 5"),
        ({"golden_rows": '{"inputs": [' + GOLDEN_ROW + '], "probabilities": [0.5, 0.5]}'}, "one probability per"),
        ({"golden_rows": '{"inputs": [["a", 2, 3, 4, 5]], "probabilities": [0.5]}'}, "'golden_rows' holds values"),
        ({"positive_class_index": "2"}, "'positive_class_index' = 2.0 is outside [0, 1]"),
        ({"positive_class_index": "0.5"}, "'positive_class_index' = 0.5 is not a whole number"),
        ({"feature_schema": "not json"}, "'feature_schema' is not valid JSON"),
        ({"feature_schema": '{"name": "x"}'}, "'feature_schema' must be a JSON list of objects"),
        ({"feature_schema": '[{"name": "total_events", "minimum": "0"}]'}, "gives 'total_events' a minimum of '0'"),
        ({"features": "[total_events]"}, "'features' is not valid JSON"),
    ],
)
def test_malformed_metadata_ends_start_up_with_one_line_naming_the_key(
    model_copy: Path, props: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.__main__ import main

    _rewrite(model_copy, **props)
    assert main(["--model", str(model_copy), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_features_that_do_not_match_the_input_width_are_refused(model_copy: Path) -> None:
    _rewrite(model_copy, features='["a", "b"]')
    with pytest.raises(ModelError, match="takes 5 features but its metadata lists 2"):
        load_model(model_copy)


def test_one_row_path_matches_the_batch_path(model_copy: Path) -> None:
    import numpy as np

    model = load_model(model_copy)
    rows = np.random.default_rng(0).random((50, 5)).astype(np.float32) * [200, 40, 10, 20, 30]
    batch = model.churn_probability(rows.astype(np.float32))
    singles = [model.predict_one(row.tolist()) for row in rows]
    assert np.array_equal(np.array(singles, dtype=np.float32), batch)


def test_predict_proba_has_scikit_learns_meaning(model_copy: Path) -> None:
    import numpy as np

    model = load_model(model_copy)
    rows = np.random.default_rng(1).random((7, 5)).astype(np.float32) * 20
    proba = model.predict_proba(rows)
    assert proba.shape == (7, model.n_classes) == (7, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(proba[:, 1], model.churn_probability(rows))


def test_plain_calls_run_the_graph_without_its_explainer(exported: Path) -> None:
    data = exported.read_bytes()
    plain = onnx.load_from_string(without_output(data, CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT))
    onnx.checker.check_model(plain)
    full = onnx.load_from_string(data)
    assert "If" in {node.op_type for node in full.graph.node}
    assert "If" not in {node.op_type for node in plain.graph.node}
    assert [i.name for i in plain.graph.input] == ["features"] and not plain.graph.initializer
    assert CONTRIBUTIONS_OUTPUT not in {o.name for o in plain.graph.output}

    model = load_model(exported)
    X = np.random.default_rng(3).uniform(0, 50, (500, 5)).astype(np.float32)
    whole = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])  # as the model's
    expected = whole.run(["probabilities"], {"features": X})[0]
    np.testing.assert_array_equal(model.predict_proba(X), expected)  # the same forest node: bit for bit
    explained, _ = model.explain(X)
    np.testing.assert_array_equal(explained, expected)
    assert model.predict_one(X[0].tolist()) == expected[0, 1]
