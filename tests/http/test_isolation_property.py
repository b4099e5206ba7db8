"""The isolation invariant, property-based: hostile requests answered in the same turn as valid ones, on every
route the doors hand to the pipeline together (``/predict`` and V2 infer from the fast and ASGI doors, the gRPC
door's ``ModelInfer``), and **every valid request gets exactly the answer it gets alone** (status and bytes), no
hostile one gets a 5xx. Hostile bodies come from the fuzz corpus's strategies and from shapes that broke turns
before (nesting past the parsers' limits, ids of any size, binary garbage, invalid UTF-8, NaN). ``PULSE_FUZZ_EXAMPLES``
sizes it (the nightly run uses 10,000); ``derandomize`` makes a CI run replayable."""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, strategies as st
from starlette.testclient import TestClient

from benchmarks.fuzz import bodies
from common.features import FEATURE_SETS
from server.config.settings import Settings
from server.core.v2 import INFER_ROUTE
from server.core.v2_grpc import INFER_ROUTE as GRPC_INFER_ROUTE, ModelInferRequest
from server.http.app import PulseApp, create_app
from server.pipeline.pipeline import PREDICT_ROUTE, Request
from tests.http.conftest import MAX_BODY
from tests.support import EXAMPLE_ROW

pytestmark = pytest.mark.http

FEATURES = FEATURE_SETS["seed"]
SERVER_RECURSION_LIMIT = 1000  # CPython's default, which the server runs with
TENSOR = {"name": "features", "datatype": "FP32", "shape": [1, 5], "data": [3, 2, 1.5, 0.5, 4]}


def _grpc_valid() -> bytes:
    message: Any = ModelInferRequest(model_name="churn", id="req-7")
    message.inputs.add(name="features", datatype="FP32", shape=[1, 5])
    message.inputs[0].contents.fp32_contents.extend([3, 2, 1.5, 0.5, 4])
    return bytes(message.SerializeToString())


VALID = [
    (PREDICT_ROUTE, json.dumps(EXAMPLE_ROW).encode(), None),
    (PREDICT_ROUTE, json.dumps([{"id": "u-1", **EXAMPLE_ROW}, EXAMPLE_ROW]).encode(), None),
    (INFER_ROUTE, json.dumps({"id": "r-1", "inputs": [TENSOR]}).encode(), None),
    (GRPC_INFER_ROUTE, _grpc_valid(), None),
]


def _nested(depth: int, opener: str = "[") -> str:
    closer = "]" if opener == "[" else "}"
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + closer * depth


_deep = st.sampled_from([1000, 1020, 1024, 1100]).map(_nested)  # around orjson's limit and the recursion limit
_hostile_json = st.one_of(
    bodies(FEATURES, MAX_BODY),  # the fuzz corpus's bodies (objects, batches, columns, V2 documents)
    _deep.map(lambda deep: ('{"inputs":[' + json.dumps(TENSOR) + '],"parameters":' + deep + "}").encode()),
    _deep.map(lambda deep: ('{"id":' + deep + ',"inputs":[' + json.dumps(TENSOR) + "]}").encode()),
    _deep.map(lambda deep: ('{"inputs":[' + json.dumps(TENSOR) + '],"outputs":' + deep + "}").encode()),
    _deep.map(lambda deep: ('{"total_events":' + deep + "}").encode()),
    st.integers(257, 50_000).map(lambda n: json.dumps({"id": "x" * n, "inputs": [TENSOR]}).encode()),
    st.integers(257, 50_000).map(lambda n: json.dumps({"id": "x" * n, **EXAMPLE_ROW}).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"\xff\xfe{", b'{"total_events": NaN}', b'{"id": "\xed\xa0\x80"}', b"", b"null", b"[]"]),
)
_hostile = st.one_of(
    st.tuples(st.sampled_from([PREDICT_ROUTE, INFER_ROUTE]), _hostile_json, st.none()),
    st.tuples(st.just(INFER_ROUTE), st.binary(max_size=200), st.sampled_from([b"3", b"999999", b"x", b"-1"])),
    st.tuples(st.just(GRPC_INFER_ROUTE), st.one_of(st.binary(max_size=300), _hostile_json), st.none()),
)


@pytest.fixture(scope="module")
def app(exported: Any) -> Iterator[PulseApp]:
    application = create_app(Settings(model_path=exported, max_batch=50, max_body_bytes=MAX_BODY))
    with TestClient(application):  # the lifespan: the model is served
        yield application


def _answers(app: PulseApp, turn: list[tuple[str, bytes, bytes | None]]) -> list[tuple[int, bytes]]:
    now = time.perf_counter()
    raised = sys.getrecursionlimit()
    sys.setrecursionlimit(SERVER_RECURSION_LIMIT)  # a server's; hypothesis raises it by 2,000 for its own use
    try:
        answers = app.pipeline.answer([Request(route, b"", body, now, length) for route, body, length in turn])
    finally:
        sys.setrecursionlimit(raised)
    return [(answer.status, answer.body) for answer in answers]


REVIEW_PROBE = (
    INFER_ROUTE,
    ('{"inputs":[' + json.dumps(TENSOR) + '],"parameters":' + _nested(1000) + "}").encode(),
    None,
)


@example(hostile=[REVIEW_PROBE], order=random.Random(0))  # the review's H1 probe: one V2 body poisoned a turn
@given(hostile=st.lists(_hostile, min_size=1, max_size=4), order=st.randoms(use_true_random=False))
def test_no_request_can_change_another_requests_answer(app: PulseApp, hostile: list[Any], order: Any) -> None:
    alone = {body: _answers(app, [(route, body, length)])[0] for route, body, length in VALID}
    turn = [*VALID, *hostile]
    order.shuffle(turn)
    answered = _answers(app, turn)
    for (route, body, _), (status, answer) in zip(turn, answered, strict=True):
        if any(body is valid for _, valid, _ in VALID):
            assert (status, answer) == alone[body], route
        else:
            assert status < 500, (route, body[:200], answer[:200])
