"""Exact TreeSHAP as ONNX operators, in the model file itself: any ONNX runtime returns the reasons.

The exported graph gains an input ``explain`` (a boolean scalar, false when not fed: an initializer gives it that
default) and an output ``contributions`` ``[N, features]`` (float32): each row's path-dependent SHAP values of
P(positive class), the same numbers as ``shap.TreeExplainer``; with the metadata's ``shap_base_value`` they add up
to the probability. They are computed inside an ``If`` on ``explain``: a caller that does not ask pays one branch
test (onnxruntime runs every node of a graph whatever outputs are fetched, so a plain output would make every
prediction pay for the reasons).

The branch is the tabulated algorithm of :mod:`common.model.treeshap` (Fast TreeSHAP v2's decomposition), over
groups of neighbouring leaves: per (group, interval) whether the row's feature lies in it (two comparisons: a
path's splits on one feature leave an interval), per group a pattern number (a MatMul with 1, 2, 4, ...), a Gather
of that group's precomputed contributions (already summed over its leaves and spread over the features), and their
sum. A Gather costs per index, so fewer, larger groups are what makes a row cheap.
"""

from __future__ import annotations

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

from common.model.treeshap import CONTRIBUTIONS_OUTPUT, EXPLAIN_INPUT, ShapTables, TreeShapError, explainer_from_onnx

_PREFIX = "shap_"  # every name this module adds to the graph


def add_contributions(model: ModelProto, tables: ShapTables, input_name: str, n_features: int) -> None:
    """Add ``explain`` and ``contributions`` to ``model`` (in place)."""
    graph = model.graph

    def constant(name: str, array: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(array, _PREFIX + name))
        return _PREFIX + name

    # Rows along the last axis: every Gather below copies whole contiguous rows of N values, and every reduction
    # is over the leading axis (a sum of contiguous slabs).
    n_groups, depth = len(tables.row_offset), tables.max_depth
    slot_feature = constant("slot_feature", tables.slot_feature)
    slot_low = constant("slot_low", tables.slot_low[:, None])
    slot_high = constant("slot_high", tables.slot_high[:, None])
    weights = constant("pattern_weights", (1 << np.arange(depth)).astype(np.float32)[None, :])
    row_offset = constant("row_offset", tables.row_offset[:, None])
    rows = constant("rows", tables.rows)  # float64: a deep forest sums thousands of leaves' shares per row
    bits_shape = constant("bits_shape", np.array([depth, -1], dtype=np.int64))
    pattern_shape = constant("pattern_shape", np.array([n_groups, -1], dtype=np.int64))
    leading = constant("leading", np.array([0], dtype=np.int64))

    def name(text: str) -> str:
        return _PREFIX + text

    nodes = [
        helper.make_node("Transpose", [input_name], [name("features_t")], perm=[1, 0]),
        helper.make_node("Gather", [name("features_t"), slot_feature], [name("slot_values")], axis=0),
        helper.make_node("Greater", [name("slot_values"), slot_low], [name("above_low")]),
        helper.make_node("LessOrEqual", [name("slot_values"), slot_high], [name("below_high")]),
        helper.make_node("And", [name("above_low"), name("below_high")], [name("follows")]),
        helper.make_node("Cast", [name("follows")], [name("bits")], to=TensorProto.FLOAT),
        helper.make_node("Reshape", [name("bits"), bits_shape], [name("bits_by_position")]),  # [depth, groups * N]
        helper.make_node("MatMul", [weights, name("bits_by_position")], [name("pattern_flat")]),
        helper.make_node("Reshape", [name("pattern_flat"), pattern_shape], [name("pattern")]),  # [groups, N]
        helper.make_node("Cast", [name("pattern")], [name("pattern_index")], to=TensorProto.INT64),
        helper.make_node("Add", [name("pattern_index"), row_offset], [name("row_index")]),
        helper.make_node("Gather", [rows, name("row_index")], [name("leaf_rows")], axis=0),  # [groups, N, F]
        helper.make_node("ReduceSum", [name("leaf_rows"), leading], [name("explained_exact")], keepdims=0),
        helper.make_node("Cast", [name("explained_exact")], [name("explained")], to=TensorProto.FLOAT),
    ]
    explained = helper.make_tensor_value_info(name("explained"), TensorProto.FLOAT, [None, n_features])
    then_branch = helper.make_graph(nodes, "shap_contributions", [], [explained])
    empty = numpy_helper.from_array(np.zeros((0, n_features), dtype=np.float32), name("empty"))
    nothing = helper.make_tensor_value_info(name("nothing"), TensorProto.FLOAT, [0, n_features])
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], [name("nothing")], value=empty)], "no_contributions", [], [nothing]
    )
    graph.input.append(helper.make_tensor_value_info(EXPLAIN_INPUT, TensorProto.BOOL, []))
    graph.initializer.append(numpy_helper.from_array(np.array(False), EXPLAIN_INPUT))
    graph.node.append(
        helper.make_node(
            "If", [EXPLAIN_INPUT], [CONTRIBUTIONS_OUTPUT], then_branch=then_branch, else_branch=else_branch
        )
    )
    graph.output.append(helper.make_tensor_value_info(CONTRIBUTIONS_OUTPUT, TensorProto.FLOAT, [None, n_features]))


def attach_contributions(model: ModelProto, covers: list[list[float]], n_features: int) -> float | None:
    """Add the contributions graph to the converted forest (in place); return the base value, or ``None`` (and add
    nothing) when the forest's tables would pass the explainer's caps: then only the server's per-row algorithm
    explains it."""
    explainer = explainer_from_onnx(model.SerializeToString(), covers, n_features, positive_index=1)
    try:
        tables = explainer.graph_tables()
    except TreeShapError:
        return None
    add_contributions(model, tables, model.graph.input[0].name, n_features)
    return tables.base_value
