"""Convert the trained forest to ONNX with the metadata a consumer needs and no code of ours.

Split thresholds are rounded *down* to float32. scikit-learn compares float32 inputs with float64 thresholds
(``x <= t``); ONNX compares float32 with float32. For a float32 ``x``, ``x <= t`` holds exactly when
``x <= floor32(t)``, so rounding down (rather than to nearest, which can round up onto an input value) makes
every split decision identical to scikit-learn's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import ModelProto
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
LABEL_OUTPUT = "label"
PROBABILITY_OUTPUT = "probabilities"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PRODUCER = "ml-pulsechecker"


def floor_float32(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The largest float32 that is <= each value."""
    rounded = values.astype(np.float32)
    too_big = rounded.astype(np.float64) > values
    rounded[too_big] = np.nextafter(rounded[too_big], np.float32(-np.inf))
    return rounded


def _round_thresholds_down(onnx_model: ModelProto, forest: RandomForestClassifier) -> None:
    (node,) = [n for n in onnx_model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attrs = {a.name: a for a in node.attribute}
    tree_ids, node_ids = list(attrs["nodes_treeids"].ints), list(attrs["nodes_nodeids"].ints)
    modes = list(attrs["nodes_modes"].strings)
    thresholds = [forest.estimators_[t].tree_.threshold for t in range(len(forest.estimators_))]
    exact = np.array([thresholds[t][n] for t, n in zip(tree_ids, node_ids, strict=True)], dtype=np.float64)
    values = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
    is_branch = np.array([m == b"BRANCH_LEQ" for m in modes])
    if not is_branch.any() or set(modes) - {b"BRANCH_LEQ", b"LEAF"}:
        raise ValueError(f"unexpected tree node modes {sorted(set(modes))}")
    values[is_branch] = floor_float32(exact[is_branch])
    del attrs["nodes_values"].floats[:]
    attrs["nodes_values"].floats.extend(values.tolist())


def convert_to_onnx(forest: RandomForestClassifier, metadata: Mapping[str, Any]) -> ModelProto:
    """ONNX model: input ``features`` float32 [N, n_features]; outputs ``label`` [N] and ``probabilities`` [N, 2].

    ``metadata`` values are stored as ``metadata_props``; non-strings as JSON.
    """
    n_features = int(forest.n_features_in_)
    onnx_model = to_onnx(
        forest,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(forest): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    outputs = [o.name for o in onnx_model.graph.output]
    if outputs != [LABEL_OUTPUT, PROBABILITY_OUTPUT]:
        raise ValueError(f"unexpected ONNX outputs {outputs}")
    _round_thresholds_down(onnx_model, forest)
    onnx_model.producer_name = PRODUCER
    onnx_model.doc_string = "Churn RandomForest. churn = probabilities[:, 1] >= metadata threshold."
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    onnx.helper.set_model_props(onnx_model, props)
    onnx.checker.check_model(onnx_model)
    return onnx_model


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
