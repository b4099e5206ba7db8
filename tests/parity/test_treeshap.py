"""The server's TreeSHAP equals shap.TreeExplainer (path-dependent) on the scikit-learn forest, to 1e-6."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import shap
from onnx.reference import ReferenceEvaluator
from sklearn.ensemble import RandomForestClassifier

import common.model.treeshap
from common.model.loader import ModelError, load_model
from common.model.onnx_graph import node_attributes
from common.model.treeshap import CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT, explainer_from_onnx, leaf_contributions
from export.convert import convert_to_onnx
from export.explain import tree_covers
from export.parity import edge_rows
from export.shap_graph import add_contributions, attach_contributions
from server.__main__ import main

pytestmark = pytest.mark.parity
TOLERANCE = 1e-6


def _reference(forest: RandomForestClassifier, X: np.ndarray) -> tuple[np.ndarray, float]:
    explainer = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    values = np.asarray(explainer.shap_values(pd.DataFrame(X.astype(np.float64), columns=forest.feature_names_in_)))
    return values[:, :, 1], float(np.ravel(explainer.expected_value)[1])


def _rows(artifacts: Path, forest: RandomForestClassifier) -> np.ndarray:
    table = pd.read_parquet(artifacts / "features.parquet")
    test = table.loc[table["split"] == "test", list(forest.feature_names_in_)].to_numpy(np.float32)
    return np.concatenate([test, edge_rows(forest, test, 2000, seed=5)])


@pytest.mark.parametrize("fixture", ["exported", "behaviour_model"])
def test_server_contributions_match_shap_on_test_and_edge_rows(fixture: str, request: pytest.FixtureRequest) -> None:
    exported: Path = request.getfixturevalue(fixture)
    forest = joblib.load(exported.parent / "model.joblib")
    model = load_model(exported)
    assert model.explainer is not None and model.explainer.tabulated
    X = _rows(exported.parent, forest)
    got = model.explainer.shap_values(X)
    expected, base = _reference(forest, X)
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    assert abs(model.explainer.base_value - base) <= TOLERANCE
    probability = forest.predict_proba(pd.DataFrame(X, columns=forest.feature_names_in_))[:, 1]
    assert np.max(np.abs(model.explainer.base_value + got.sum(axis=1) - probability)) <= TOLERANCE
    assert np.max(np.abs(model.explainer.base_value + got.sum(axis=1) - model.churn_probability(X))) <= TOLERANCE


@pytest.mark.parametrize("tabulated", [True, False])
def test_a_depth_12_forest_matches_shap_with_tables_and_per_row(
    trained: Path, tabulated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pd.read_parquet(trained / "features.parquet")
    features = json.loads((trained / "metrics.json").read_text())["features"]
    train = table[table["split"] == "train"]
    forest = RandomForestClassifier(n_estimators=8, max_depth=12, min_samples_leaf=2, random_state=0)
    forest.fit(train[features], train["churned"])
    assert max(t.get_depth() for t in forest.estimators_) == 12
    if not tabulated:
        monkeypatch.setattr(common.model.treeshap, "MAX_TABLE_FEATURES", 0)  # force the per-row evaluation
    data = convert_to_onnx(forest, {"features": features}).SerializeToString()
    explainer = explainer_from_onnx(data, tree_covers(forest), len(features), 1)
    assert explainer.tabulated is tabulated
    X = edge_rows(forest, train[features].to_numpy(np.float32)[:300], 500, seed=2)
    expected, base = _reference(forest, X)
    assert np.max(np.abs(explainer.shap_values(X) - expected)) <= TOLERANCE
    assert abs(explainer.base_value - base) <= TOLERANCE


def test_leaf_formula_equals_brute_force_shapley_values() -> None:
    """phi from the closed form against the Shapley definition, enumerating every coalition."""
    rng = np.random.default_rng(0)
    for d in range(1, 6):
        z = rng.uniform(0.05, 0.95, size=(1, d))
        v = np.array([0.3])
        for pattern in itertools.product([0.0, 1.0], repeat=d):
            o = np.array(pattern)[None, :]

            def game(coalition: tuple[int, ...], z: np.ndarray = z, o: np.ndarray = o, d: int = d) -> float:
                return float(0.3 * np.prod([o[0, j] if j in coalition else z[0, j] for j in range(d)]))

            for i in range(d):
                others = [j for j in range(d) if j != i]
                brute = sum(
                    math.factorial(len(s))
                    * math.factorial(d - len(s) - 1)
                    / math.factorial(d)
                    * (game((*s, i)) - game(s))
                    for size in range(d)
                    for s in itertools.combinations(others, size)
                )
                assert leaf_contributions(z, o, v)[0, i] == pytest.approx(brute, abs=1e-15)


def test_the_graph_reader_agrees_with_the_onnx_package(behaviour_model: Path) -> None:
    model = onnx.load(str(behaviour_model))
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    ours = node_attributes(behaviour_model.read_bytes(), "TreeEnsembleClassifier")
    assert set(ours) == {a.name for a in node.attribute}
    for attribute in node.attribute:
        reference = onnx.helper.get_attribute_value(attribute)
        if isinstance(reference, list) and reference and not isinstance(reference[0], bytes):
            np.testing.assert_array_equal(np.asarray(reference, dtype=ours[attribute.name].dtype), ours[attribute.name])
        else:
            assert ours[attribute.name] == reference, attribute.name


def _with_covers(exported: Path, tmp_path: Path, change: float) -> Path:
    path = tmp_path / "model.onnx"
    shutil.copy(exported, path)
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    covers = json.loads(props["tree_covers"])
    forest = joblib.load(exported.parent / "model.joblib")
    leaf = int(np.flatnonzero(forest.estimators_[0].tree_.children_left == -1)[0])
    covers[0][leaf] *= change  # one leaf's cover (an inner node's can cancel along a path that splits on one feature)
    props["tree_covers"] = json.dumps(covers)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_a_perturbed_cover_stops_start_up_with_one_line(
    behaviour_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_covers(behaviour_model, tmp_path, 1.5)
    with pytest.raises(ModelError, match="golden SHAP contributions do not reproduce"):
        load_model(path)
    assert main(["--model", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "golden SHAP contributions do not reproduce" in err


def test_an_unchanged_copy_loads(behaviour_model: Path, tmp_path: Path) -> None:
    assert load_model(_with_covers(behaviour_model, tmp_path, 1.0)).explainer is not None


def _graph_contributions(model: onnx.ModelProto, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The file's own ``contributions`` output, from onnxruntime and from the onnx package's reference evaluator."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"features": X, EXPLAIN_INPUT: np.array(True)}
    ours = session.run([CONTRIBUTIONS_OUTPUT], feed)[0]
    reference = np.asarray(ReferenceEvaluator(model).run([CONTRIBUTIONS_OUTPUT], feed)[0])
    return ours, reference


@pytest.mark.parametrize("fixture", ["exported", "behaviour_model"])
def test_the_model_file_computes_exact_reasons_on_two_runtimes(fixture: str, request: pytest.FixtureRequest) -> None:
    exported: Path = request.getfixturevalue(fixture)
    forest = joblib.load(exported.parent / "model.joblib")
    model = onnx.load(str(exported))
    X = _rows(exported.parent, forest)
    expected, base = _reference(forest, X)
    for got in _graph_contributions(model, X):
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= TOLERANCE
        probability = forest.predict_proba(pd.DataFrame(X, columns=forest.feature_names_in_))[:, 1]
        assert np.max(np.abs(base + got.astype(np.float64).sum(axis=1) - probability)) <= TOLERANCE
    props = {p.key: p.value for p in model.metadata_props}
    assert abs(float(props["shap_base_value"]) - base) <= TOLERANCE
    served = load_model(exported)
    assert served.explains_in_graph  # the server reads them from the same onnxruntime call
    np.testing.assert_allclose(served.explain(X[:50])[1], expected[:50], rtol=0, atol=TOLERANCE)


def test_a_depth_12_forest_explained_by_its_graph_on_two_runtimes(trained: Path) -> None:
    table = pd.read_parquet(trained / "features.parquet")
    features = json.loads((trained / "metrics.json").read_text())["features"]
    train = table[table["split"] == "train"]
    forest = RandomForestClassifier(n_estimators=8, max_depth=12, min_samples_leaf=2, random_state=0)
    forest.fit(train[features], train["churned"])
    model = convert_to_onnx(forest, {"features": features})
    base = attach_contributions(model, tree_covers(forest), len(features))
    assert base is not None
    X = edge_rows(forest, train[features].to_numpy(np.float32)[:300], 500, seed=2)
    expected, shap_base = _reference(forest, X)
    assert abs(base - shap_base) <= TOLERANCE
    for got in _graph_contributions(model, X):
        assert np.max(np.abs(got - expected)) <= TOLERANCE


def test_the_graph_gathers_neighbouring_leaves_into_groups_with_the_same_contributions(
    exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forest = joblib.load(exported.parent / "model.joblib")
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    n_features = len(json.loads(meta["features"]))
    plain = convert_to_onnx(forest, {"features": list(forest.feature_names_in_)}).SerializeToString()
    explainer = explainer_from_onnx(plain, json.loads(meta["tree_covers"]), n_features, positive_index=1)
    grouped, cap = explainer.graph_tables(), common.model.treeshap.GROUP_CONDITIONS
    monkeypatch.setattr(common.model.treeshap, "GROUP_CONDITIONS", 0)  # every leaf a group of its own
    per_leaf = explainer.graph_tables()
    n_leaves = sum(1 for tree in forest.estimators_ for left in tree.tree_.children_left if left == -1)
    assert len(per_leaf.row_offset) == n_leaves
    assert len(grouped.row_offset) < n_leaves / 2  # what makes a row cheap: one gather per group
    assert grouped.max_depth <= cap  # no path of this forest tests more features than that
    X = _rows(exported.parent, forest)
    contributions = []
    for tables in (grouped, per_leaf):
        model = convert_to_onnx(forest, {"features": list(forest.feature_names_in_)})
        add_contributions(model, tables, model.graph.input[0].name, n_features)
        contributions.append(_graph_contributions(model, X)[0])
    np.testing.assert_allclose(contributions[0], contributions[1], rtol=0, atol=1e-7)


def test_over_the_table_cap_the_file_carries_no_graph_and_the_server_explains_per_row(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = pd.read_parquet(trained / "features.parquet")
    features = json.loads((trained / "metrics.json").read_text())["features"]
    train = table[table["split"] == "train"]
    forest = RandomForestClassifier(n_estimators=4, max_depth=8, random_state=0).fit(train[features], train["churned"])
    monkeypatch.setattr(common.model.treeshap, "MAX_TABLE_FEATURES", 0)
    model = convert_to_onnx(forest, {"features": features})
    assert attach_contributions(model, tree_covers(forest), len(features)) is None
    assert CONTRIBUTIONS_OUTPUT not in {output.name for output in model.graph.output}


def test_a_graph_whose_tables_were_altered_stops_start_up(exported: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported))
    (rows,) = [t for t in model.graph.initializer if t.name == "shap_rows"]
    rows.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(rows) * 2, "shap_rows"))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="'contributions' does not reproduce the SHAP contributions"):
        load_model(path)
