"""Row parsing: the fast path and the error path agree."""

from __future__ import annotations

import numpy as np
import pytest

from server.core.errors import MalformedJson, PayloadTooLarge, ValidationFailed
from server.core.validation import Columns, RowParser, decode_json

FEATURES = ("a", "b", "c")
parser = RowParser(FEATURES, (0.0, 0.0, float("-inf")), max_batch=3)


def test_single_object_becomes_one_row_in_feature_order() -> None:
    X = parser.parse(b'{"c": -1.5, "a": 1, "b": 2.25}')
    assert X == [1, 2.25, -1.5]


def test_array_becomes_rows_in_order() -> None:
    X = parser.parse(b'[{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]')
    assert isinstance(X, np.ndarray) and X.dtype == np.float32 and X.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_minimum_applies_only_where_the_model_sets_one() -> None:
    with pytest.raises(ValidationFailed) as info:
        parser.parse(b'{"a": -1, "b": 0, "c": -1e30}')
    assert [e["loc"] for e in info.value.detail] == [["body", "a"]]


def test_mixed_batch_reports_every_bad_row() -> None:
    with pytest.raises(ValidationFailed) as info:
        parser.parse(b'[{"a": 1, "b": 2, "c": 3}, {"a": false, "b": 2, "c": 3}, {"a": 1, "b": 2}]')
    assert [(e["loc"], e["type"]) for e in info.value.detail] == [
        (["body", 1, "a"], "float_type"),
        (["body", 2, "c"], "missing"),
    ]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'[{"a": 1, "b": 2, "c": 3}, {"a": true, "b": 2, "c": 3}]', ["body", 1, "a"]),
        (b'[{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": null, "c": 3}]', ["body", 1, "b"]),
        (b'{"a": [1, 2], "b": [3, false], "c": [5, 6]}', ["body", "b", 1]),
        (b'{"a": [1, 2], "b": [3, 4], "c": [null, 6]}', ["body", "c", 0]),
    ],
)
def test_a_bool_or_null_in_a_batch_is_not_read_as_a_number(body: bytes, loc: list[object]) -> None:
    # bool is a subclass of int: numpy would read True as 1.0.
    with pytest.raises(ValidationFailed) as info:
        parser.parse(body)
    assert [(e["loc"], e["type"]) for e in info.value.detail] == [(loc, "float_type")]


LETTERED = RowParser(("value", "level", "c"), (0.0, 0.0, 0.0), max_batch=3)  # keys with a 'u' and 'l's


def test_a_columnar_body_of_numbers_converts_without_a_type_check_to_the_same_rows() -> None:
    body = b'{"level": [2, 3.5e2], "value": [1, 0.25], "c": [0, 123456789]}'
    assert LETTERED.holds_only_numbers(body)
    fast = LETTERED.parse(body)
    checked = LETTERED.parse_columns(decode_json(body), numbers_only=False)
    assert isinstance(fast, Columns) and fast.X.tolist() == checked.X.tolist() == [[1, 2, 0], [0.25, 350, 123456792]]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"value": [1, "2"], "level": [1, 2], "c": [1, 2]}', ["body", "value", 1]),
        (b'{"value": [1, true], "level": [1, 2], "c": [1, 2]}', ["body", "value", 1]),
        (b'{"value": [1, 2], "level": [null, 2], "c": [1, 2]}', ["body", "level", 0]),
        (b'{"value": [1, 2], "level": [1, 2], "c": [[1], 2]}', ["body", "c", 0]),
        (b'{"value": [1, 2], "level": [1, 2], "c": [1, {"x": 1}]}', ["body", "c", 1]),
        # A key spelling its 'l' as an escape to make room for a `false`: the escape brings a 'u' of its own.
        (b'{"va\\u006cue": [1, false], "level": [1, 2], "c": [1, 2]}', ["body", "value", 1]),
    ],
    ids=["string", "true", "null", "array", "object", "escaped key and false"],
)
def test_a_columnar_body_with_anything_but_numbers_is_checked_value_by_value(body: bytes, loc: list[object]) -> None:
    with pytest.raises(ValidationFailed) as info:
        LETTERED.parse(body)
    assert [(e["loc"], e["type"]) for e in info.value.detail] == [(loc, "float_type")]


def test_batch_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge):
        parser.parse(b"[" + b",".join([b'{"a": 1, "b": 2, "c": 3}'] * 4) + b"]")


def test_error_list_is_bounded() -> None:
    rows = b"[" + b",".join([b"1"] * 3) + b"]"
    big = RowParser(FEATURES, (0, 0, 0), max_batch=1000)
    with pytest.raises(ValidationFailed) as info:
        big.parse(b"[" + b",".join([b'{"x": 1}'] * 500) + b"]")
    assert len(info.value.detail) == 50
    with pytest.raises(ValidationFailed):
        big.parse(rows)


def test_decode_json_accepts_nan_for_a_precise_422_and_rejects_garbage() -> None:
    assert np.isnan(decode_json(b"NaN"))
    with pytest.raises(MalformedJson):
        decode_json(b"{nope}")


def test_values_beyond_float32_are_refused_even_without_a_minimum() -> None:
    for body in (b'{"a": 1, "b": 2, "c": -1e39}', b'[{"a": 1, "b": 2, "c": -1e39}]'):
        with pytest.raises(ValidationFailed) as info:
            parser.parse(body)
        assert [(e["loc"][-1], e["type"]) for e in info.value.detail] == [("c", "finite_number")]
