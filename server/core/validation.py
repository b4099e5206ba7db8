"""JSON body -> ``float32[N, n_features]``, or a 4xx naming every bad field.

The fast path checks types and ranges inline and builds the array in one call; only a body that fails it
walks the slow path that collects every error, so well-formed requests never pay for error reporting.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from server.core.errors import MalformedJson, PayloadTooLarge, ValidationFailed, field_error
from server.core.ids import ID_FIELD, Id, id_error, id_problem

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_REPORTED_ERRORS = 50
MAX_JSON_DEPTH = 1024  # orjson's fixed recursion limit


NUMBERS = frozenset({int, float})


@dataclass(frozen=True, slots=True)
class Columns:
    """A columnar batch, ``{"feature": [v1, v2, ...], ...}``: one list per feature, answered in the same shape."""

    X: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.X)


@dataclass(frozen=True, slots=True)
class Identified:
    """Rows sent with caller ids (``"id"`` beside the features): the rows as the parser gives them without ids,
    and one id per row (``None`` for a row of the batch that came without one)."""

    rows: list[float] | npt.NDArray[np.float32] | Columns
    ids: list[Id | None]


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
        names = "".join(self.features)
        self._key_letters = (names.count("u"), names.count("l"))

    def holds_only_numbers(self, body: bytes) -> bool:
        """Whether a columnar body (its keys the feature names) can hold only numbers as values (or arrays and
        objects, which conversion refuses), judged from three byte counts instead of a type check per value
        (~60 us less per 1000 rows): a string value needs quotes beyond the keys', and ``true``, ``false`` and
        ``null`` a 'u' or an 'l' beyond the keys' letters (a key may spell a letter as an escape, which adds a
        'u' and never removes one). Not for row objects: their keys repeat, and counting costs more than it saves.
        """
        u, ell = self._key_letters
        return body.count(b'"') == 2 * self._n and body.count(b"u") == u and body.count(b"l") == ell

    def parse(self, body: bytes) -> list[float] | npt.NDArray[np.float32] | Columns | Identified:
        """One row as a list in feature order (a JSON object), ``float32[N, n]`` (a JSON array of objects), or
        :class:`Columns` (a JSON object of one list per feature); :class:`Identified` around them when the body
        carries caller ids."""
        data = decode_json(body)
        if type(data) is dict:
            values = data.values()
            if data and type(next(iter(values))) is list and all(type(value) is list for value in values):
                return self.parse_columns(data, self.holds_only_numbers(body))
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

    def parse_rows(self, rows: list[Any]) -> npt.NDArray[np.float32] | Identified:
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
                if not set(map(type, column)) <= NUMBERS:
                    raise _Invalid
                columns.append(column)
            X64 = np.array(columns, dtype=np.float64).T
        except (_Invalid, KeyError, OverflowError):
            return self._identified_rows(rows)  # rows with ids, or the 422

        if not ((X64 >= self._minimum_row) & (X64 <= FLOAT32_MAX)).all():  # NaN fails both
            raise ValidationFailed(self.errors(rows, batch=True))
        return X64.astype(np.float32)

    def _identified_rows(self, rows: list[Any]) -> Identified:
        """A batch the fast path refused: rows with caller ids, validated without them; else every error."""
        if not any(type(row) is dict and ID_FIELD in row for row in rows):
            raise ValidationFailed(self.errors(rows, batch=True))
        ids = [row.get(ID_FIELD) if type(row) is dict else None for row in rows]
        if any(ident is not None and id_problem(ident) for ident in ids):
            raise ValidationFailed(self.errors(rows, batch=True))
        stripped = [{k: v for k, v in row.items() if k != ID_FIELD} if type(row) is dict else row for row in rows]
        rows_of = self.parse_rows(stripped)
        assert not isinstance(rows_of, Identified)  # the ids were taken out
        return Identified(rows_of, ids)

    def parse_columns(self, data: dict[str, Any], numbers_only: bool = False) -> Columns | Identified:
        """Validate a columnar batch: every feature once, lists of one length, numbers in range. ``numbers_only``:
        the body was found to hold no string, bool or null value (:meth:`holds_only_numbers`)."""
        if ID_FIELD in data:
            return self._identified_columns(data)
        errors = [
            field_error(["body", name], "Field required", "missing") for name in self.features if name not in data
        ] + [
            field_error(["body", name], "Extra inputs are not permitted", "extra_forbidden")
            for name in data
            if name not in self._feature_set
        ]
        errors += [
            field_error(["body", name], "Input should be a valid list", "list_type")
            for name in self.features
            if name in data and type(data[name]) is not list
        ]
        if errors:
            raise ValidationFailed(errors[:MAX_REPORTED_ERRORS])
        lengths = {len(data[name]) for name in self.features}
        if len(lengths) > 1:
            message = f"Every column should have the same length, got lengths {sorted(lengths)}"
            raise ValidationFailed([field_error(["body"], message, "columns_length")])
        n = lengths.pop()
        if n == 0:
            raise ValidationFailed([field_error(["body"], "Columns should have at least 1 item, not 0", "too_short")])
        if n > self.max_batch:
            raise PayloadTooLarge(f"batch of {n} rows exceeds the limit of {self.max_batch}")
        X64 = np.empty((self._n, n), dtype=np.float64)
        for j, name in enumerate(self.features):
            X64[j] = self._column(name, data[name], numbers_only)
        within = (X64 >= self._minimum_row[:, None]) & (X64 <= FLOAT32_MAX)  # NaN fails both
        if not within.all():
            found = []
            for j, i in np.argwhere(~within)[:MAX_REPORTED_ERRORS].tolist():
                name = self.features[j]
                problem = _value_problem(data[name][i], self.minimums[j]) or (
                    "Input should be a finite number",
                    "finite_number",
                )
                found.append(field_error(["body", name, i], *problem))
            raise ValidationFailed(found)
        return Columns(np.ascontiguousarray(X64.T, dtype=np.float32))

    def _identified_columns(self, data: dict[str, Any]) -> Identified:
        """A columnar batch with an ``"id"`` list: one valid id per row, beside valid feature columns."""
        ids = data[ID_FIELD]
        if type(ids) is not list:
            raise ValidationFailed([field_error(["body", ID_FIELD], "Input should be a valid list", "list_type")])
        columns = {name: values for name, values in data.items() if name != ID_FIELD}
        rows = next((len(values) for values in columns.values() if type(values) is list), len(ids))
        if len(ids) != rows:
            message = f"Every column should have the same length, got {len(ids)} ids for {rows} rows"
            raise ValidationFailed([field_error(["body", ID_FIELD], message, "columns_length")])
        found = [
            error
            for i, ident in enumerate(ids)
            if ident is not None and (error := id_error(["body", ID_FIELD, i], ident))  # null: that row has no id
        ]
        if found:
            raise ValidationFailed(found[:MAX_REPORTED_ERRORS])
        X = self.parse_columns(columns)
        assert not isinstance(X, Identified)  # the ids were taken out
        return Identified(X, ids)

    @staticmethod
    def _column(name: str, values: list[Any], numbers_only: bool) -> npt.NDArray[np.float64]:
        """One column as float64, each value's type checked first unless ``numbers_only``: the first value that is
        not a number is a 422 naming it."""
        if not numbers_only and not set(map(type, values)) <= NUMBERS:
            index = next(i for i, value in enumerate(values) if type(value) not in NUMBERS)
            raise ValidationFailed([field_error(["body", name, index], "Input should be a valid number", "float_type")])
        try:
            return np.fromiter(values, dtype=np.float64, count=len(values))
        except OverflowError:  # an integer past float64: out of range, reported as such
            return np.full(len(values), np.inf)
        except (TypeError, ValueError):  # a nested array or object, which only numbers_only lets this far
            return RowParser._column(name, values, numbers_only=False)

    def parse_one(self, row: dict[str, Any]) -> list[float] | Identified:
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
        if ID_FIELD in row and (row[ID_FIELD] is None or id_problem(row[ID_FIELD]) is None):  # null: no id
            rest = {k: v for k, v in row.items() if k != ID_FIELD}
            plain = self.parse_one(rest)
            assert not isinstance(plain, Identified)  # the id was taken out
            return Identified(plain, [row[ID_FIELD]])
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
                if name == ID_FIELD:
                    error = id_error([*prefix, ID_FIELD], row[name])
                    if error is not None:
                        found.append(error)
                elif name not in self._feature_set:
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
