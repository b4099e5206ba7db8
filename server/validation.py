"""JSON body -> ``float32[N, n_features]``, or a 4xx naming every bad field.

The fast path checks types and ranges inline and builds the array in one call; only a body that fails it
walks the slow path that collects every error, so well-formed requests never pay for error reporting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from server.errors import MalformedJson, PayloadTooLarge, ValidationFailed, field_error

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_REPORTED_ERRORS = 50
MAX_JSON_DEPTH = 1024  # orjson's fixed recursion limit


class _Invalid(Exception):
    """Internal: the fast path met something it does not accept."""


def decode_json(body: bytes) -> Any:
    """Parse JSON; NaN, Infinity and out-of-range numbers parse (to be rejected with a 422 naming the field)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):  # well-formed, but no request of ours nests this deep
            raise MalformedJson(f"JSON nests deeper than orjson's limit of {MAX_JSON_DEPTH} levels") from None
        try:  # the stdlib parser accepts NaN/Infinity/1e400, which deserve a 422 rather than a 400
            return json.loads(body)
        except (ValueError, RecursionError):
            raise MalformedJson(f"Malformed JSON: {exc}") from None


class RowParser:
    """Validates request rows against the model's features and their minimums."""

    def __init__(self, features: Sequence[str], minimums: Sequence[float], max_batch: int) -> None:
        self.features = tuple(features)
        self.minimums = tuple(minimums)
        self.max_batch = max_batch
        # The lowest accepted value per feature: its minimum, and never below what float32 can hold.
        lows = tuple(max(minimum, -FLOAT32_MAX) for minimum in self.minimums)
        self._bounds = tuple(zip(self.features, lows, strict=True))
        self._n = len(self.features)
        self._feature_set = frozenset(self.features)
        self._minimum_row = np.asarray(lows, dtype=np.float64)

    def parse(self, body: bytes) -> list[float] | npt.NDArray[np.float32]:
        """One row as a list in feature order (a JSON object), or ``float32[N, n]`` (a JSON array of objects)."""
        data = decode_json(body)
        if type(data) is dict:
            return self.parse_one(data)
        if type(data) is list:
            return self.parse_rows(data)
        raise ValidationFailed(
            [
                field_error(
                    ["body"],
                    "Input should be an object of the model's features or an array of such objects",
                    "model_attributes_type",
                )
            ]
        )

    def parse_rows(self, rows: list[Any]) -> npt.NDArray[np.float32]:
        """Validate a batch of row objects; one array for one onnxruntime call."""
        if not rows:
            raise ValidationFailed([field_error(["body"], "List should have at least 1 item, not 0", "too_short")])
        if len(rows) > self.max_batch:
            raise PayloadTooLarge(f"batch of {len(rows)} rows exceeds the limit of {self.max_batch}")
        n = self._n
        try:
            for row in rows:
                if type(row) is not dict or len(row) != n:
                    raise _Invalid
            columns = []
            for name in self.features:
                column = [row[name] for row in rows]
                if not set(map(type, column)) <= {int, float}:
                    raise _Invalid
                columns.append(column)
            X64 = np.array(columns, dtype=np.float64).T
        except (_Invalid, KeyError, OverflowError):
            raise ValidationFailed(self.errors(rows, batch=True)) from None
        if not ((X64 >= self._minimum_row) & (X64 <= FLOAT32_MAX)).all():  # NaN fails both
            raise ValidationFailed(self.errors(rows, batch=True))
        return X64.astype(np.float32)

    def parse_one(self, row: dict[str, Any]) -> list[float]:
        """Validate one row object; its values in feature order."""
        if len(row) == self._n:
            try:
                values = []
                for name, minimum in self._bounds:
                    value = row[name]
                    if (type(value) is not float and type(value) is not int) or not minimum <= value <= FLOAT32_MAX:
                        raise _Invalid
                    values.append(value)
                return values
            except (_Invalid, KeyError):
                pass
        raise ValidationFailed(self.errors([row], batch=False))

    def errors(self, rows: list[Any], batch: bool) -> list[dict[str, Any]]:
        """Every problem in ``rows``, each as ``{"loc", "msg", "type"}`` (at most 50)."""
        found: list[dict[str, Any]] = []
        for index, row in enumerate(rows):
            prefix: list[str | int] = ["body", index] if batch else ["body"]
            if type(row) is not dict:
                found.append(field_error(prefix, "Input should be a valid dictionary", "dict_type"))
                continue
            for name, minimum in zip(self.features, self.minimums, strict=True):
                if name not in row:
                    found.append(field_error([*prefix, name], "Field required", "missing"))
                    continue
                problem = _value_problem(row[name], minimum)
                if problem is not None:
                    found.append(field_error([*prefix, name], *problem))
            for name in row:
                if name not in self._feature_set:
                    found.append(field_error([*prefix, name], "Extra inputs are not permitted", "extra_forbidden"))
            if len(found) >= MAX_REPORTED_ERRORS:
                break
        return found[:MAX_REPORTED_ERRORS]


def _value_problem(value: Any, minimum: float) -> tuple[str, str] | None:
    if type(value) is not int and type(value) is not float:
        return "Input should be a valid number", "float_type"
    if (type(value) is float and not math.isfinite(value)) or abs(value) > FLOAT32_MAX:
        return "Input should be a finite number", "finite_number"
    if value < minimum:
        return f"Input should be greater than or equal to {minimum:g}", "greater_than_equal"
    return None
