"""Load the ONNX model once, learn everything about it from its metadata, and score batches."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from common.model.files import ModelError, ModelFileError, read_model_bytes
from common.model.onnx_graph import without_output
from common.model.reference import Column, DriftReferenceError, read_reference
from common.model.treeshap import (
    CHUNK_ROWS,
    CONTRIBUTIONS_OUTPUT,
    EXPLAIN_INPUT,
    TreeExplainer,
    TreeShapError,
    explainer_from_onnx,
)

logger = logging.getLogger(__name__)

__all__ = ["Model", "ModelError", "ModelFileError", "ModelInfo", "load_model", "model_from_bytes", "read_model_bytes"]

GOLDEN_TOLERANCE = 1e-6
REQUIRED_METADATA = ("features", "threshold", "model_version")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the server knows about the model, all of it read from the file."""

    feature_set: str  # the name training gave the feature list ("" for a model exported before feature sets)
    features: tuple[str, ...]
    minimums: tuple[float, ...]
    descriptions: tuple[str, ...]
    units: tuple[str, ...]
    threshold: float
    version: str
    trained_at: str
    sha256: str
    size_bytes: int
    input_name: str
    probability_output: str
    positive_index: int
    test_metrics: dict[str, Any]
    node_count: int | None
    example: dict[str, float]  # a valid input row that is nobody's, for the API docs


def session_options(threads: int) -> ort.SessionOptions:
    """Tuned for one row on one core: no spinning threads competing with the event loop."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


_TRUE = np.array(True)


class Model:
    """An ``InferenceSession`` and its :class:`ModelInfo`; ``predict_one`` is the hot call.

    ``explainer`` computes SHAP reason codes when the file carries its trees' covers (``None`` otherwise, with
    ``explain_unavailable`` saying why).
    """

    explainer: TreeExplainer | None = None  # the per-row algorithm: the reference, and the fallback
    explains_in_graph = False  # the file's graph computes the contributions itself (export.shap_graph)
    explain_unavailable = "the model file carries no 'tree_covers'; export it again with `python -m export`"
    drift_columns: list[Column] | None = None  # reference bins for live drift, when the file carries them

    def __init__(
        self,
        session: ort.InferenceSession,
        info: ModelInfo,
        n_classes: int,
        plain: ort.InferenceSession | None = None,
    ) -> None:
        self.info = info
        self.n_classes = n_classes
        self.metadata: dict[str, str] = {}  # the file's metadata_props, as read (for tools beyond the server)
        self._session = session
        # Plain calls run the file's graph without its explainer (``plain``, when it has one): the explainer's If
        # node costs every call of the whole graph ~1 us even when it takes the empty branch.
        scorer = plain or session
        self._run = scorer.run
        self._run_explained = session.run
        self._outputs = [info.probability_output]
        self._input = info.input_name
        self._positive = info.positive_index
        # One-row calls go through buffers bound once: no per-call tensor or output allocation (~40% faster).
        self._one_in = np.zeros((1, len(info.features)), dtype=np.float32)
        self._one_out = np.zeros((1, n_classes), dtype=np.float32)
        self._binding = scorer.io_binding()
        self._binding.bind_cpu_input(self._input, self._one_in)
        self._binding.bind_output(
            self._outputs[0], "cpu", 0, np.float32, list(self._one_out.shape), self._one_out.ctypes.data
        )
        self._run_bound = scorer.run_with_iobinding

    def predict_one(self, values: list[float]) -> np.float32:
        """P(churn) for one row given as a list in feature order.

        Not thread-safe (shared buffers); the event loop calls it without awaiting in between.
        """
        self._one_in[0] = values
        self._run_bound(self._binding)
        probability: np.float32 = self._one_out[0, self._positive]
        return probability

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities ``[N, n_classes]`` for the rows of ``X`` (float32), as scikit-learn's method."""
        probabilities: npt.NDArray[np.float32] = self._run(self._outputs, {self._input: X})[0]
        return probabilities

    def explain(self, X: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
        """Class probabilities ``[N, n_classes]`` and SHAP contributions of P(positive) ``[N, n_features]``: in one
        onnxruntime call when the graph carries the explainer, else the per-row algorithm after the call."""
        if self.explains_in_graph:
            if len(X) > CHUNK_ROWS:
                # Chunks keep the graph's [leaves x rows] intermediates in cache (~1.3x rows/s). The probabilities
                # come from one call over all rows: onnxruntime's forest sums can differ in the last bit with the
                # batch size, and an explained answer must carry the plain answer's probability.
                parts = [self.explain(X[i : i + CHUNK_ROWS])[1] for i in range(0, len(X), CHUNK_ROWS)]
                return self.predict_proba(X), np.concatenate(parts)
            probabilities, contributions = self._run_explained(
                [self._outputs[0], CONTRIBUTIONS_OUTPUT], {self._input: X, EXPLAIN_INPUT: _TRUE}
            )
            return probabilities, contributions.astype(np.float64)
        if self.explainer is None:
            raise ModelError(self.explain_unavailable)
        return self.predict_proba(X), self.explainer.shap_values(X)

    def churn_probability(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(churn) for each row of ``X`` (float32, [N, n_features]), in one onnxruntime call."""
        return np.ascontiguousarray(self.predict_proba(X)[:, self._positive])


class _Metadata:
    """The model's ``metadata_props``, read key by key; every problem is a :class:`ModelError` naming the key."""

    def __init__(self, meta: dict[str, str]) -> None:
        self.meta = meta

    def __contains__(self, key: str) -> bool:
        return key in self.meta

    def text(self, key: str, default: str | None = None) -> str:
        if key in self.meta:
            return self.meta[key]
        if default is None:
            raise ModelError(f"model metadata lacks {key!r}; export it with `python -m export`")
        return default

    def json(self, key: str, default: Any) -> Any:
        if key not in self.meta:
            return default
        try:
            return json.loads(self.meta[key])
        except json.JSONDecodeError as exc:
            raise ModelError(f"model metadata {key!r} is not valid JSON") from exc

    def number(self, key: str, low: float, high: float, default: str | None = None) -> float:
        raw = self.text(key, default)
        try:
            value = float(raw)
        except ValueError:
            raise ModelError(f"model metadata {key!r} = {raw!r} is not a number") from None
        if not low <= value <= high:
            raise ModelError(f"model metadata {key!r} = {value} is outside [{low:g}, {high:g}]")
        return value


def _feature_schema(meta: _Metadata, features: list[str]) -> dict[str, dict[str, Any]]:
    schema = meta.json("feature_schema", [])
    if not isinstance(schema, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in schema):
        raise ModelError("model metadata 'feature_schema' must be a JSON list of objects with a 'name'")
    by_name = {item["name"]: item for item in schema}
    for item in by_name.values():
        minimum = item.get("minimum", None)
        if minimum is not None and (type(minimum) not in (int, float) or not math.isfinite(minimum)):
            raise ModelError(f"model metadata 'feature_schema' gives {item['name']!r} a minimum of {minimum!r}")
    return by_name


def _golden_rows(meta: _Metadata, n_features: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]] | None:
    golden = meta.json("golden_rows", None)
    if golden is None:
        return None
    if not isinstance(golden, dict) or "inputs" not in golden or "probabilities" not in golden:
        raise ModelError("model metadata 'golden_rows' must be an object with 'inputs' and 'probabilities'")
    try:
        X = np.asarray(golden["inputs"], dtype=np.float32)
        expected = np.asarray(golden["probabilities"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError("model metadata 'golden_rows' holds values that are not numbers") from None
    if X.ndim != 2 or X.shape[1] != n_features or len(X) == 0:
        raise ModelError(f"model metadata 'golden_rows' inputs must be rows of {n_features} numbers, got {X.shape}")
    if expected.shape != (len(X),):
        raise ModelError(f"model metadata 'golden_rows' needs one probability per input row, got {expected.shape}")
    return X, expected


def _read_info(session: ort.InferenceSession, sha256: str, size: int) -> tuple[ModelInfo, int]:
    """The model's :class:`ModelInfo` and its number of classes."""
    meta = _Metadata(session.get_modelmeta().custom_metadata_map)
    for key in REQUIRED_METADATA:
        meta.text(key)
    features = meta.json("features", [])
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ModelError("model metadata 'features' must be a non-empty JSON list of names")
    schema = _feature_schema(meta, features)
    threshold = meta.number("threshold", 0.0, 1.0)

    input_name = meta.text("input_name", session.get_inputs()[0].name)
    inputs = {i.name: i for i in session.get_inputs()}
    if input_name not in inputs or len(inputs) != 1:
        raise ModelError(f"model must have one input named {input_name!r}, has {sorted(inputs)}")
    width = inputs[input_name].shape[-1]
    if width != len(features):
        raise ModelError(f"model input takes {width} features but its metadata lists {len(features)}")
    if inputs[input_name].type != "tensor(float)":
        raise ModelError(f"model input must be float32, is {inputs[input_name].type}")
    probability_output = meta.text("probability_output", "probabilities")
    if probability_output not in {o.name for o in session.get_outputs()}:
        raise ModelError(f"model has no output {probability_output!r}")
    zeros = np.zeros((1, len(features)), np.float32)
    n_classes = int(session.run([probability_output], {input_name: zeros})[0].shape[1])
    positive = meta.number("positive_class_index", 0, n_classes - 1, default="1")
    if positive != int(positive):
        raise ModelError(f"model metadata 'positive_class_index' = {positive} is not a whole number")

    minimums = tuple(float(schema.get(f, {}).get("minimum", float("-inf"))) for f in features)
    info = ModelInfo(
        feature_set=meta.text("feature_set", ""),
        features=tuple(features),
        minimums=minimums,
        descriptions=tuple(str(schema.get(f, {}).get("description", "")) for f in features),
        units=tuple(str(schema.get(f, {}).get("unit", "")) for f in features),
        threshold=threshold,
        version=meta.text("model_version"),
        trained_at=meta.text("trained_at", ""),
        sha256=sha256,
        size_bytes=size,
        input_name=input_name,
        probability_output=probability_output,
        positive_index=int(positive),
        test_metrics=meta.json("test_metrics", {}),
        node_count=meta.json("node_count", None),
        example=_example(features, minimums),
    )
    return info, n_classes


def _example(features: list[str], minimums: tuple[float, ...]) -> dict[str, float]:
    """A valid input row for the API docs that is nobody's: one above each feature's minimum (review L10: the first
    golden row, a real test-set user's features, was published in the open /openapi.json)."""
    return {
        name: (minimum if math.isfinite(minimum) else 0.0) + 1.0
        for name, minimum in zip(features, minimums, strict=True)
    }


def _check_golden_rows(model: Model, meta: dict[str, str]) -> None:
    golden = _golden_rows(_Metadata(meta), len(model.info.features))
    if golden is None:
        logger.warning("model has no golden rows; its outputs cannot be checked at start-up")
        return
    X, expected = golden
    got = model.churn_probability(X)
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= GOLDEN_TOLERANCE:
        raise ModelError(
            f"model's golden rows do not reproduce (max |diff| {worst:.3g} > {GOLDEN_TOLERANCE}); "
            f"onnxruntime {ort.__version__} disagrees with the exporting scikit-learn"
        )


def _attach_explainer(model: Model, data: bytes, meta: dict[str, str]) -> None:
    """Build the TreeSHAP explainer from the graph and ``tree_covers``, and prove it on ``golden_shap``."""
    metadata = _Metadata(meta)
    covers = metadata.json("tree_covers", None)
    if covers is None:
        return
    info = model.info
    try:
        explainer = explainer_from_onnx(data, covers, len(info.features), info.positive_index)
    except TreeShapError as exc:
        raise ModelError(f"model metadata 'tree_covers' cannot explain this model: {exc}") from None
    golden_rows = _golden_rows(metadata, len(info.features))
    golden = metadata.json("golden_shap", None)
    if golden is not None and golden_rows is not None:
        try:
            expected = np.asarray(golden["contributions"], dtype=np.float64)
            base = float(golden["base_value"])
        except (KeyError, TypeError, ValueError):
            raise ModelError("model metadata 'golden_shap' must hold 'contributions' and 'base_value'") from None
        got = explainer.shap_values(golden_rows[0])
        if got.shape != expected.shape:
            raise ModelError(f"model metadata 'golden_shap' has shape {expected.shape}, the golden rows {got.shape}")
        worst = max(float(np.max(np.abs(got - expected))), abs(explainer.base_value - base))
        if not worst <= GOLDEN_TOLERANCE:
            raise ModelError(
                f"model's golden SHAP contributions do not reproduce (max |diff| {worst:.3g} > {GOLDEN_TOLERANCE}); "
                "its 'tree_covers' do not match the trees"
            )
    model.explainer = explainer
    if CONTRIBUTIONS_OUTPUT in {output.name for output in model._session.get_outputs()}:
        _prove_graph_explainer(model, golden_rows[0] if golden_rows is not None else None)


def _prove_graph_explainer(model: Model, rows: npt.NDArray[np.float32] | None) -> None:
    """Serve the graph's contributions only once they reproduce the per-row algorithm's on the golden rows."""
    assert model.explainer is not None
    model.explains_in_graph = True
    if rows is None:
        rows = np.zeros((1, len(model.info.features)), dtype=np.float32)
    try:
        _, got = model.explain(rows)
    except Exception as exc:  # onnxruntime's own family: a graph that does not run
        model.explains_in_graph = False
        raise ModelError(f"model output {CONTRIBUTIONS_OUTPUT!r} does not run: {str(exc)[:200]}") from exc
    worst = float(np.max(np.abs(got - model.explainer.shap_values(rows))))
    if not worst <= GOLDEN_TOLERANCE:
        model.explains_in_graph = False
        raise ModelError(
            f"model output {CONTRIBUTIONS_OUTPUT!r} does not reproduce the SHAP contributions "
            f"(max |diff| {worst:.3g} > {GOLDEN_TOLERANCE})"
        )


def _plain_session(session: ort.InferenceSession, data: bytes, threads: int) -> ort.InferenceSession | None:
    """A session over the file's graph without its explainer, when it has one (``None``: score with ``session``).
    Its probabilities are the full graph's bit for bit: the same forest node on the same input."""
    if CONTRIBUTIONS_OUTPUT not in {output.name for output in session.get_outputs()}:
        return None
    try:
        plain = without_output(data, CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT)
        return ort.InferenceSession(plain, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # an unexpected layout (OnnxFormatError) or onnxruntime's own family: the full graph
        logger.warning("model graph kept whole for plain calls: %s", str(exc)[:200])
        return None


def load_model(
    path: Path, expected_sha256: str = "", threads: int = 1, max_bytes: int = 1 << 40, follow_symlinks: bool = True
) -> Model:
    """Read, verify (sha256, metadata, golden rows), warm up and return the model.

    Raises :class:`ModelError` with a one-line reason when the file cannot be served (:class:`ModelFileError` when
    the file itself, not its content, is the reason).
    """
    data = read_model_bytes(path, expected_sha256, max_bytes, follow_symlinks)
    return model_from_bytes(data, threads, source=f"model file {str(path)!r}")


def model_from_bytes(data: bytes, threads: int = 1, source: str = "model") -> Model:
    """The checked, warmed-up :class:`Model` of an ONNX file's bytes (a batch scorer's workers get bytes)."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own family for corrupt or unsupported files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source} is not a loadable ONNX model: {message[:200]}") from exc
    info, n_classes = _read_info(session, digest, len(data))
    model = Model(session, info, n_classes, _plain_session(session, data, threads))
    meta = session.get_modelmeta().custom_metadata_map
    model.metadata = meta
    _check_golden_rows(model, meta)
    _attach_explainer(model, data, meta)
    reference = _Metadata(meta).json("reference_bins", None)
    if reference is not None:
        try:
            model.drift_columns = read_reference(reference, model.info.features)
        except DriftReferenceError as exc:
            raise ModelError(f"model metadata {exc}") from None
    warm = np.zeros((1, len(model.info.features)), dtype=np.float32)
    for _ in range(50):  # page the trees into cache before the first request
        model.predict_one(warm[0].tolist())
    logger.info(
        "model loaded version=%s sha256=%s features=%d", model.info.version, digest[:12], len(model.info.features)
    )
    return model
