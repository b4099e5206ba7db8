"""Exact path-dependent TreeSHAP (Lundberg et al. 2020; what ``shap.TreeExplainer`` computes with
``feature_perturbation="tree_path_dependent"``) for the served forest, from the ONNX graph and per-node covers.

For one leaf with value ``v`` whose path splits on the distinct features ``D`` (``d = |D|``), the conditional
expectation game is ``v(S) = v * prod_{j in S} o_j * prod_{j in D \\ S} z_j``, where ``z_j`` is the share of
training cover that follows the path at ``j``'s splits and ``o_j`` is 1 when the row follows them all. Its
Shapley value for ``i`` in ``D`` is

    phi_i = v * (o_i - z_i) * sum_s w(s, d) * [y^s] prod_{j in D, j != i} (z_j + o_j * y),   w(s, d) = s!(d-s-1)!/d!

and a tree's (the forest's) contributions are the sums over its leaves. Only the pattern of ``o`` (one bit per
feature on the path) depends on the row, so, as in Fast TreeSHAP v2 (Yang 2021), every leaf's contributions for
all ``2^d`` patterns are tabulated once at load: a row costs one comparison per split, a few gathers and a sum.
Above :data:`MAX_TABLE_FEATURES` distinct features on a path, or :data:`MAX_TABLE_BYTES` of tables, the same
formula is evaluated per row instead (no tables; slower, same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Any

import numpy as np
import numpy.typing as npt

from common.model.onnx_graph import OnnxFormatError, node_attributes

# The exported graph's explainer (export.shap_graph): an input that asks for it, an output that carries it.
EXPLAIN_INPUT = "explain"
CONTRIBUTIONS_OUTPUT = "contributions"

MAX_TABLE_FEATURES = 10
MAX_TABLE_BYTES = 64 * 2**20
GROUP_CONDITIONS = 8  # a graph's leaf groups test at most this many intervals (2^8-row tables): see graph_tables
CHUNK_ROWS = 128
_FALSE = np.zeros(1, dtype=bool)

Floats = npt.NDArray[np.float64]
Condition = tuple[int, float, float]  # (feature, low, high): a path's splits on one feature, as an interval


class TreeShapError(ValueError):
    """The model cannot be explained; the message says why in one line."""


def _shapley_weights(d: int) -> Floats:
    return np.array([factorial(s) * factorial(d - s - 1) / factorial(d) for s in range(d)], dtype=np.float64)


def leaf_contributions(z: Floats, o: Floats, v: Floats) -> Floats:
    """phi for leaves sharing one path length ``d``: ``z`` (L, d), ``o`` (..., L, d) in {0, 1}, ``v`` (L,).

    Returns (..., L, d): each leaf's contribution to each of its path features, by the formula above.
    """
    d = z.shape[-1]
    weights = _shapley_weights(d)
    out = np.empty(np.broadcast_shapes(o.shape, z.shape), dtype=np.float64)
    for i in range(d):
        poly = np.zeros((*out.shape[:-1], d), dtype=np.float64)  # coefficients of y^0 .. y^(d-1)
        poly[..., 0] = 1.0
        for j in range(d):
            if j == i:
                continue
            shifted = np.zeros_like(poly)
            shifted[..., 1:] = poly[..., :-1]
            poly = poly * z[..., j, None] + shifted * o[..., j, None]
        out[..., i] = v * (o[..., i] - z[..., i]) * (poly @ weights)
    return out


@dataclass(frozen=True, slots=True)
class _Leaf:
    value: float
    features: list[int]  # distinct features on the path, in path order
    zero_fraction: list[float]  # z per feature
    steps: list[list[tuple[int, bool]]]  # per feature: (internal node, went the <= way) of each split on it


@dataclass(frozen=True)
class ShapTables:
    """The tabulated explainer as arrays (:meth:`TreeExplainer.graph_tables`), by groups of leaves, with slots
    (group, interval) in position-major order (slot ``k * groups + group``). The splits of one path on one feature
    leave an interval of its values, so a row ``x`` follows them all exactly when ``low < x[feature] <= high``
    (float32, as the trees compare). Per group ``pattern = sum_k 2^k bit[k]``; the contributions are the sum over
    groups of ``rows[row_offset + pattern]`` (each row already spread over the features)."""

    slot_feature: npt.NDArray[np.int64]  # [max_depth * groups]
    slot_low: npt.NDArray[np.float32]  # -inf: no lower bound; +inf for a slot past its group's intervals
    slot_high: npt.NDArray[np.float32]  # +inf: no upper bound
    max_depth: int  # the most intervals a group tests
    row_offset: npt.NDArray[np.int64]  # [groups]
    rows: Floats  # [table rows + 1, features]: a group's contributions for one pattern, by feature
    base_value: float


class TreeExplainer:
    """Per-row SHAP contributions of P(positive class) for a ``TreeEnsembleClassifier``, in feature order."""

    def __init__(self, leaves: list[_Leaf], n_features: int, node_feature: Any, node_threshold: Any) -> None:
        self.n_features = n_features
        self.base_value = float(sum(leaf.value * float(np.prod(leaf.zero_fraction)) for leaf in leaves))
        self._node_feature = np.asarray(node_feature, dtype=np.intp)
        self._node_threshold = np.asarray(node_threshold, dtype=np.float32)
        # Cells: one per (leaf, path feature); steps: one per split, grouped by cell.
        step_node: list[int] = []
        step_true: list[bool] = []
        cell_start: list[int] = []
        cell_k: list[int] = []
        cell_feature: list[int] = []
        for leaf in leaves:
            for k, (feature, steps) in enumerate(zip(leaf.features, leaf.steps, strict=True)):
                cell_start.append(len(step_node))
                cell_k.append(k)
                cell_feature.append(feature)
                for node, went_true in steps:
                    step_node.append(node)
                    step_true.append(went_true)
        self._step_node = np.asarray(step_node, dtype=np.intp)
        self._step_true = np.asarray(step_true, dtype=bool)
        self._cell_start = np.asarray(cell_start, dtype=np.intp)
        per_cell = np.diff(np.r_[self._cell_start, len(step_node)])
        self._extra_steps = [
            (np.flatnonzero(per_cell > r), self._cell_start[per_cell > r] + r)
            for r in range(1, per_cell.max(initial=1))
        ]
        self._leaf_cell_start = np.asarray([0, *np.cumsum([len(leaf.features) for leaf in leaves])[:-1]], np.intp)
        self._feature_of_cell = np.zeros((len(cell_start), n_features), dtype=np.float64)
        self._feature_of_cell[np.arange(len(cell_start)), cell_feature] = 1.0
        self._leaves = leaves
        depths = np.asarray([len(leaf.features) for leaf in leaves], dtype=np.int64)
        table_bytes = int(np.sum((1 << depths) * depths)) * 8
        self.tabulated = bool(depths.max(initial=0) <= MAX_TABLE_FEATURES and table_bytes <= MAX_TABLE_BYTES)
        self._groups = self._group_by_depth(depths)
        if self.tabulated:
            self._build_tables(depths, np.asarray(cell_k, dtype=np.int64))

    def _group_by_depth(self, depths: npt.NDArray[np.int64]) -> list[tuple[int, Any, Floats, Floats, Any]]:
        groups = []
        for d in sorted(set(depths.tolist()) - {0}):
            members = np.flatnonzero(depths == d)
            z = np.asarray([self._leaves[i].zero_fraction for i in members], dtype=np.float64)
            v = np.asarray([self._leaves[i].value for i in members], dtype=np.float64)
            cells = self._leaf_cell_start[members][:, None] + np.arange(d)[None, :]
            groups.append((d, members, z, v, cells))
        return groups

    def _table_rows(self, depths: npt.NDArray[np.int64]) -> tuple[Floats, npt.NDArray[np.int64]]:
        """Every leaf's contributions for each of its ``2^d`` patterns, as rows of ``max_depth`` floats (and an
        all-zero last row), with each leaf's first row."""
        max_depth = int(depths.max())
        row_offset = np.concatenate([[0], np.cumsum(1 << depths)[:-1]]).astype(np.int64)
        rows = np.zeros((int((1 << depths).sum()) + 1, max_depth), dtype=np.float64)
        for d, members, z, v, _ in self._groups:
            patterns = ((np.arange(1 << d)[:, None] >> np.arange(d)[None, :]) & 1).astype(np.float64)
            phi = leaf_contributions(z, patterns[:, None, :], v)  # (2^d, L, d)
            for column, leaf in enumerate(members):
                rows[row_offset[leaf] : row_offset[leaf] + (1 << d), :d] = phi[:, column, :]
        return rows, row_offset

    def _build_tables(self, depths: npt.NDArray[np.int64], cell_k: npt.NDArray[np.int64]) -> None:
        """The tables and the indices a row's work needs: compare once per split, one gather of
        ``leaves x max_depth`` bits, a weighted sum to each leaf's pattern number, one gather of a short row per
        leaf, and one matrix product into features."""
        max_depth = int(depths.max())
        rows, row_offset = self._table_rows(depths)
        self._depths = depths
        # float32 halves the bytes each row's gather moves; every entry is a share of one leaf's value, so rounding
        # stays near 1e-8, inside the 1e-6 parity bound that the start-up check enforces.
        self._rows = rows.astype(np.float32)
        self._row_offset = row_offset.astype(np.int32)[None, :]
        # Which split answers each (leaf, path feature): an index into [goes <=, goes >, zero row] per split.
        n_internal = len(self._node_feature)
        zero = 2 * n_internal
        first = np.full((len(depths), max_depth), zero, dtype=np.intp)
        extra: list[list[tuple[int, int]]] = []
        for leaf_index, leaf in enumerate(self._leaves):
            for k, steps in enumerate(leaf.steps):
                for rank, (node, went_true) in enumerate(steps):
                    answer = node if went_true else node + n_internal
                    if rank == 0:
                        first[leaf_index, k] = answer
                    else:
                        while len(extra) < rank:
                            extra.append([])
                        extra[rank - 1].append((leaf_index * max_depth + k, answer))
        self._first_answer = first
        self._extra_answers = [
            (np.asarray([c for c, _ in group], np.intp), np.asarray([a for _, a in group], np.intp)) for group in extra
        ]
        self._pattern_weights = (1 << np.arange(max_depth)).astype(np.int32)
        feature_of_slot = np.zeros((len(depths), max_depth, self.n_features), dtype=np.float32)
        for leaf_index, leaf in enumerate(self._leaves):
            for k, feature in enumerate(leaf.features):
                feature_of_slot[leaf_index, k, feature] = 1.0
        self._feature_of_slot = feature_of_slot.reshape(-1, self.n_features)

    def graph_tables(self) -> ShapTables:
        """What an ONNX graph needs to compute the same contributions (``export.shap_graph``), in float64.

        The graph's "leaves" are groups of neighbouring leaves of one tree (:data:`GROUP_CONDITIONS`): a row's cost
        is one gather per group, and neighbours share most of their path's intervals (two sibling leaves differ in
        one), so a group's table over the union of its intervals costs little more than its leaves' own tables.
        Its row for a union pattern is the sum of its leaves' rows for the patterns that pattern gives them."""
        if not self.tabulated:
            raise TreeShapError(
                f"paths with more than {MAX_TABLE_FEATURES} features, or tables over {MAX_TABLE_BYTES >> 20} MiB"
            )
        table, row_offset = self._table_rows(self._depths)
        conditions = [self._leaf_conditions(leaf) for leaf in self._leaves]
        groups = _neighbour_groups(conditions, GROUP_CONDITIONS)
        if sum(1 << len(union) for _, union in groups) * self.n_features * 8 > MAX_TABLE_BYTES:
            groups = [([i], list(leaf)) for i, leaf in enumerate(conditions)]  # one leaf a group: the leaves' size
        width = max(len(union) for _, union in groups)
        group_rows: list[Floats] = []
        group_offset = np.cumsum([0] + [1 << len(union) for _, union in groups[:-1]]).astype(np.int64)
        feature_of = np.zeros((width, len(groups)), dtype=np.int64)
        low = np.full((width, len(groups)), np.inf, dtype=np.float32)  # past a group's intervals: never true
        high = np.full((width, len(groups)), np.inf, dtype=np.float32)
        for g, (members, union) in enumerate(groups):
            patterns = np.arange(1 << len(union))
            bits = (patterns[:, None] >> np.arange(len(union))[None, :]) & 1  # [patterns, union]
            rows = np.zeros((len(patterns), self.n_features), dtype=np.float64)
            for leaf_index in members:
                leaf = self._leaves[leaf_index]
                at = [union.index(condition) for condition in conditions[leaf_index]]
                own = sum(bits[:, position] << k for k, position in enumerate(at))  # the leaf's pattern, per row
                rows[:, leaf.features] += table[row_offset[leaf_index] + own, : len(leaf.features)]
            group_rows.append(rows)
            for k, (feature, lower, upper) in enumerate(union):
                feature_of[k, g], low[k, g], high[k, g] = feature, lower, upper
        group_rows.append(np.zeros((1, self.n_features), dtype=np.float64))  # the last row stays zero
        return ShapTables(
            slot_feature=feature_of.reshape(-1),
            slot_low=low.reshape(-1),
            slot_high=high.reshape(-1),
            max_depth=width,
            row_offset=group_offset,
            rows=np.concatenate(group_rows),
            base_value=self.base_value,
        )

    def _leaf_conditions(self, leaf: _Leaf) -> list[Condition]:
        """Per path feature, the interval its splits leave: the row follows them all when ``low < x <= high``."""
        thresholds = self._node_threshold
        return [
            (
                feature,
                float(max((thresholds[n] for n, went_true in steps if not went_true), default=-np.inf)),
                float(min((thresholds[n] for n, went_true in steps if went_true), default=np.inf)),
            )
            for feature, steps in zip(leaf.features, leaf.steps, strict=True)
        ]

    def _cell_bits(self, XT: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
        """(cells, N): does each row follow every split of each leaf's path on that path feature?"""
        goes_true = XT[self._node_feature] <= self._node_threshold[:, None]
        satisfied = goes_true[self._step_node] == self._step_true[:, None]
        bits: npt.NDArray[np.bool_] = satisfied[self._cell_start]
        for cells, steps in self._extra_steps:  # the second, third, ... split on the same feature of a path
            bits[cells] &= satisfied[steps]
        return bits

    def _tabulated(self, X: npt.NDArray[np.float32]) -> Floats:
        n = len(X)
        XT = np.ascontiguousarray(X.T)
        goes_true = XT[self._node_feature] <= self._node_threshold[:, None]
        answers = np.concatenate([goes_true, ~goes_true, np.zeros((1, n), dtype=bool)])
        slots = answers[self._first_answer]  # (leaves, max_depth, N)
        flat = slots.reshape(-1, n)
        for cells, extra in self._extra_answers:  # the second, third, ... split on one feature of a path
            flat[cells] &= answers[extra]
        patterns = np.einsum("lkn,k->nl", slots.view(np.uint8), self._pattern_weights)
        patterns += self._row_offset
        values = np.take(self._rows, patterns.reshape(-1), axis=0)  # (N * leaves, max_depth)
        result: Floats = (values.reshape(n, -1) @ self._feature_of_slot).astype(np.float64)
        return result

    def _tabulated_one(self, x: npt.NDArray[np.float32]) -> Floats:
        """The same for one row, in 1-D arrays: a dozen small numpy calls."""
        goes_true = x[self._node_feature] <= self._node_threshold
        answers = np.concatenate([goes_true, ~goes_true, _FALSE])
        slots = answers[self._first_answer]  # (leaves, max_depth)
        flat = slots.reshape(-1)
        for cells, extra in self._extra_answers:
            flat[cells] &= answers[extra]
        patterns = slots.view(np.uint8) @ self._pattern_weights
        patterns += self._row_offset[0]
        result: Floats = (np.take(self._rows, patterns, axis=0).reshape(-1) @ self._feature_of_slot).astype(np.float64)
        return result

    def shap_values(self, X: npt.NDArray[np.float32]) -> Floats:
        """Contributions ``[N, n_features]``; with :attr:`base_value` they sum to each row's probability."""
        X = np.asarray(X, dtype=np.float32).reshape(-1, self.n_features)
        if len(X) > CHUNK_ROWS:  # chunks keep every intermediate array in cache: ~3x the rows/s of one big pass
            return np.concatenate([self.shap_values(X[i : i + CHUNK_ROWS]) for i in range(0, len(X), CHUNK_ROWS)])
        if self.tabulated:
            return self._tabulated_one(X[0])[None, :] if len(X) == 1 else self._tabulated(X)
        bits = self._cell_bits(np.ascontiguousarray(X.T))
        phi = np.zeros((len(X), self.n_features), dtype=np.float64)
        for _, _, z, v, cells in self._groups:
            o = np.moveaxis(bits[cells], -1, 0).astype(np.float64)  # (N, L, d)
            contributions = leaf_contributions(z, o, v)
            phi += contributions.reshape(len(phi), -1) @ self._feature_of_cell[cells.reshape(-1)]
        return phi


def _neighbour_groups(conditions: list[list[Condition]], cap: int) -> list[tuple[list[int], list[Condition]]]:
    """Consecutive leaves (a tree's, in depth-first order: neighbours share their path's top) gathered while the
    union of their intervals stays within ``cap``; a leaf alone may have more."""
    groups: list[tuple[list[int], list[Condition]]] = []
    members: list[int] = []
    union: list[Condition] = []
    for index, own in enumerate(conditions):
        merged = union + [condition for condition in own if condition not in union]
        if members and len(merged) > cap:
            groups.append((members, union))
            members, merged = [], list(own)
        members.append(index)
        union = merged
    if members:
        groups.append((members, union))
    return groups


def explainer_from_onnx(model: bytes, covers: list[list[float]], n_features: int, positive_index: int) -> TreeExplainer:
    """Read the forest from the model's ``TreeEnsembleClassifier`` node; ``covers[t][n]`` is the training cover of
    node ``n`` of tree ``t``. Raises :class:`TreeShapError` naming what does not fit."""
    try:
        attrs = node_attributes(model, "TreeEnsembleClassifier")
    except OnnxFormatError as exc:
        raise TreeShapError(f"cannot read the forest: {exc}") from None
    post = attrs.get("post_transform") or b"NONE"
    if post != b"NONE" or np.any(attrs.get("base_values", 0.0) != 0):
        raise TreeShapError(f"post_transform {post.decode()!r} or base_values: only summed leaf values are supported")
    trees, nodes = attrs["nodes_treeids"], attrs["nodes_nodeids"]
    modes = attrs["nodes_modes"]
    if set(modes) - {b"BRANCH_LEQ", b"LEAF"}:
        raise TreeShapError(f"unsupported node modes {sorted(set(modes) - {b'BRANCH_LEQ', b'LEAF'})}")
    position = {(int(t), int(n)): i for i, (t, n) in enumerate(zip(trees, nodes, strict=True))}
    value = _leaf_values(attrs, position, positive_index)
    cover = np.full(len(trees), np.nan)
    try:
        for (t, n), i in position.items():
            cover[i] = float(covers[t][n])
    except (IndexError, TypeError, ValueError):
        raise TreeShapError("metadata 'tree_covers' does not match the forest's trees and nodes") from None
    if not (np.isfinite(cover) & (cover > 0)).all():
        raise TreeShapError("metadata 'tree_covers' holds a cover that is not a positive number")

    internal = [i for i, mode in enumerate(modes) if mode == b"BRANCH_LEQ"]
    internal_index = {node: k for k, node in enumerate(internal)}
    leaves: list[_Leaf] = []
    for tree in sorted(set(map(int, trees))):
        stack: list[tuple[int, list[tuple[int, int, bool, float]]]] = [(position[(tree, 0)], [])]
        while stack:
            node, path = stack.pop()
            if modes[node] == b"LEAF":
                leaves.append(_make_leaf(float(value[node]), path))
                continue
            true_child = position[(tree, int(attrs["nodes_truenodeids"][node]))]
            false_child = position[(tree, int(attrs["nodes_falsenodeids"][node]))]
            feature = int(attrs["nodes_featureids"][node])
            for child, went_true in ((true_child, True), (false_child, False)):
                step = (internal_index[node], feature, went_true, cover[child] / cover[node])
                stack.append((child, [*path, step]))
    node_feature = attrs["nodes_featureids"][internal]
    if node_feature.size and (node_feature.max() >= n_features or node_feature.min() < 0):
        raise TreeShapError("the forest splits on a feature the model's input does not have")
    return TreeExplainer(leaves, n_features, node_feature, attrs["nodes_values"][internal])


def _make_leaf(value: float, path: list[tuple[int, int, bool, float]]) -> _Leaf:
    features: list[int] = []
    fractions: list[float] = []
    steps: list[list[tuple[int, bool]]] = []
    for node, feature, went_true, fraction in path:
        if feature not in features:
            features.append(feature)
            fractions.append(1.0)
            steps.append([])
        k = features.index(feature)
        fractions[k] *= fraction
        steps[k].append((node, went_true))
    return _Leaf(value, features, fractions, steps)


def _leaf_values(attrs: dict[str, Any], position: dict[tuple[int, int], int], positive_index: int) -> Floats:
    """Each leaf's weight for the positive class (a binary ensemble may carry only that class's weights)."""
    class_ids = attrs["class_ids"]
    n_labels = len(attrs.get("classlabels_int64s", attrs.get("classlabels_strings", [])))
    if set(class_ids.tolist()) == {0} and n_labels == 2:
        if positive_index != 1:
            raise TreeShapError("a binary ensemble with one weight per leaf scores class 1 only")
        wanted = 0
    else:
        wanted = positive_index
    value = np.zeros(len(position), dtype=np.float64)
    for t, n, c, w in zip(
        attrs["class_treeids"], attrs["class_nodeids"], class_ids, attrs["class_weights"], strict=True
    ):
        if c == wanted:
            value[position[(int(t), int(n))]] += float(w)
    return value
