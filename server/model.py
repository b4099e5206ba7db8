"""Load the ONNX model once, learn everything about it from its metadata, and score batches."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

logger = logging.getLogger(__name__)

GOLDEN_TOLERANCE = 1e-6
REQUIRED_METADATA = ("features", "threshold", "model_version")


class ModelError(RuntimeError):
    """The model file cannot be served; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the server knows about the model, all of it read from the file."""

    features: tuple[str, ...]
    minimums: tuple[float, ...]
    descriptions: tuple[str, ...]
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
    example: dict[str, float]  # a real input row (the first golden row), for the API docs


def _sha256_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _json(meta: dict[str, str], key: str, default: Any) -> Any:
    if key not in meta:
        return default
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelError(f"model metadata {key!r} is not valid JSON") from exc


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


class Model:
    """An ``InferenceSession`` and its :class:`ModelInfo`; ``predict_proba`` is the only hot call."""

    def __init__(self, session: ort.InferenceSession, info: ModelInfo) -> None:
        self.info = info
        self._session = session
        self._run = session.run
        self._outputs = [info.probability_output]
        self._input = info.input_name
        self._positive = info.positive_index
        # One-row calls go through buffers bound once: no per-call tensor or output allocation (~40% faster).
        zeros = np.zeros((1, len(info.features)), np.float32)
        self.n_classes = int(self._run(self._outputs, {self._input: zeros})[0].shape[1])
        self._one_in = np.zeros((1, len(info.features)), dtype=np.float32)
        self._one_out = np.zeros((1, self.n_classes), dtype=np.float32)
        self._binding = session.io_binding()
        self._binding.bind_cpu_input(self._input, self._one_in)
        self._binding.bind_output(
            self._outputs[0], "cpu", 0, np.float32, list(self._one_out.shape), self._one_out.ctypes.data
        )
        self._run_bound = session.run_with_iobinding

    def predict_one(self, values: list[float]) -> np.float32:
        """P(churn) for one row given as a list in feature order.

        Not thread-safe (shared buffers); the event loop calls it without awaiting in between.
        """
        self._one_in[0] = values
        self._run_bound(self._binding)
        probability: np.float32 = self._one_out[0, self._positive]
        return probability

    def predict_proba(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """P(churn) for each row of ``X`` (float32, [N, n_features]), in one onnxruntime call."""
        probabilities: npt.NDArray[np.float32] = self._run(self._outputs, {self._input: X})[0]
        return np.ascontiguousarray(probabilities[:, self._positive])

    def predict_all(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's probability output as it is, ``[N, n_classes]``."""
        probabilities: npt.NDArray[np.float32] = self._run(self._outputs, {self._input: X})[0]
        return probabilities


def _read_info(session: ort.InferenceSession, sha256: str, size: int) -> ModelInfo:
    meta = session.get_modelmeta().custom_metadata_map
    missing = [k for k in REQUIRED_METADATA if k not in meta]
    if missing:
        raise ModelError(f"model metadata lacks {', '.join(missing)}; export it with `python -m export`")
    features = _json(meta, "features", [])
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ModelError("model metadata 'features' must be a non-empty JSON list of names")
    schema = {item["name"]: item for item in _json(meta, "feature_schema", []) if isinstance(item, dict)}
    try:
        threshold = float(meta["threshold"])
    except ValueError as exc:
        raise ModelError(f"model metadata threshold {meta['threshold']!r} is not a number") from exc
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"model metadata threshold {threshold} is outside [0, 1]")

    input_name = meta.get("input_name", session.get_inputs()[0].name)
    inputs = {i.name: i for i in session.get_inputs()}
    if input_name not in inputs or len(inputs) != 1:
        raise ModelError(f"model must have one input named {input_name!r}, has {sorted(inputs)}")
    width = inputs[input_name].shape[-1]
    if width != len(features):
        raise ModelError(f"model input takes {width} features but its metadata lists {len(features)}")
    if inputs[input_name].type != "tensor(float)":
        raise ModelError(f"model input must be float32, is {inputs[input_name].type}")
    probability_output = meta.get("probability_output", "probabilities")
    if probability_output not in {o.name for o in session.get_outputs()}:
        raise ModelError(f"model has no output {probability_output!r}")

    golden = _json(meta, "golden_rows", None)
    first = golden["inputs"][0] if isinstance(golden, dict) and golden.get("inputs") else [0.0] * len(features)
    return ModelInfo(
        features=tuple(features),
        minimums=tuple(float(schema.get(f, {}).get("minimum", float("-inf"))) for f in features),
        descriptions=tuple(str(schema.get(f, {}).get("description", "")) for f in features),
        threshold=threshold,
        version=meta["model_version"],
        trained_at=meta.get("trained_at", ""),
        sha256=sha256,
        size_bytes=size,
        input_name=input_name,
        probability_output=probability_output,
        positive_index=int(meta.get("positive_class_index", "1")),
        test_metrics=_json(meta, "test_metrics", {}),
        node_count=_json(meta, "node_count", None),
        example=dict(zip(features, map(float, first), strict=True)),
    )


def _check_golden_rows(model: Model, meta: dict[str, str]) -> None:
    golden = _json(meta, "golden_rows", None)
    if golden is None:
        logger.warning("model has no golden rows; its outputs cannot be checked at start-up")
        return
    X = np.asarray(golden["inputs"], dtype=np.float32)
    expected = np.asarray(golden["probabilities"], dtype=np.float64)
    got = model.predict_proba(X)
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= GOLDEN_TOLERANCE:
        raise ModelError(
            f"model's golden rows do not reproduce (max |diff| {worst:.3g} > {GOLDEN_TOLERANCE}); "
            f"onnxruntime {ort.__version__} disagrees with the exporting scikit-learn"
        )


def load_model(path: Path, expected_sha256: str = "", threads: int = 1) -> Model:
    """Read, verify (sha256, metadata, golden rows), warm up and return the model.

    Raises :class:`ModelError` with a one-line reason when the file cannot be served.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model file {str(path)!r} does not exist") from exc
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(path)!r}: {exc.strerror}") from exc
    digest = hashlib.sha256(data).hexdigest()
    sidecar = _sha256_file(path)
    if not expected_sha256 and sidecar.is_file():
        expected_sha256 = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
    if expected_sha256 and expected_sha256.lower() != digest:
        raise ModelError(f"model file {str(path)!r} has sha256 {digest[:12]}..., expected {expected_sha256[:12]}...")
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own family for corrupt or unsupported files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {str(path)!r} is not a loadable ONNX model: {message[:200]}") from exc
    model = Model(session, _read_info(session, digest, len(data)))
    meta = session.get_modelmeta().custom_metadata_map
    _check_golden_rows(model, meta)
    warm = np.zeros((1, len(model.info.features)), dtype=np.float32)
    for _ in range(50):  # page the trees into cache before the first request
        model.predict_proba(warm)
    logger.info(
        "model loaded version=%s sha256=%s features=%d", model.info.version, digest[:12], len(model.info.features)
    )
    return model
