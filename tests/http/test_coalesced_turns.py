"""The requests of one turn are scored together, whatever they ask: ``/predict`` with and without ``explain=K`` (any
K), and V2 infer in both encodings (HTTP JSON and gRPC protobuf), with and without reasons. Each kind makes at most
one onnxruntime call for those that ask no reasons and one for those that do; each request is answered byte for byte
as it would be alone; a shared call that fails fails only the request at fault."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.core.v2 import INFER_ROUTE
from server.core.v2_grpc import INFER_ROUTE as GRPC_ROUTE, ModelInferRequest
from server.http.app import PulseApp, create_app
from server.pipeline import infer as infer_module
from server.pipeline.pipeline import PREDICT_ROUTE, Request

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def app(behaviour_model: Path) -> Iterator[PulseApp]:
    application = create_app(Settings(model_path=behaviour_model))
    with TestClient(application):
        yield application


def _json(rows: np.ndarray, explain: bool = False, request_id: str = "") -> tuple[str, bytes]:
    document: dict[str, Any] = {
        "id": request_id,
        "inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}],
    }
    if explain:
        document["parameters"] = {"explain": True}
    return INFER_ROUTE, json.dumps(document).encode()


def _grpc(rows: np.ndarray, explain: bool = False) -> tuple[str, bytes]:
    message: Any = ModelInferRequest(model_name="churn")
    message.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    message.raw_input_contents.append(rows.astype("<f4").tobytes())
    if explain:
        message.parameters["explain"].bool_param = True
    return GRPC_ROUTE, message.SerializeToString()


def _turn(app: PulseApp, requests: list[tuple[str, bytes]]) -> tuple[list[tuple[int, bytes]], int]:
    """The answers to one turn of ``requests`` (a route's query after ``?``), and how many onnxruntime calls it
    made."""
    calls = sum(app.state.metrics.compute.counts)
    turn = []
    for target, body in requests:
        route, _, query = target.partition("?")
        turn.append(Request(route, query.encode(), body, time.perf_counter()))
    answers = app.pipeline.answer(turn)
    return [(answer.status, answer.body) for answer in answers], sum(app.state.metrics.compute.counts) - calls


def _mixed(seed: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(12):
        rows = rng.integers(0, 40, size=(int(rng.integers(1, 4)), 6)).astype(np.float32)
        requests.append((_json, _grpc)[i % 2](rows, explain=i % 3 == 0))
    return requests


def test_a_mixed_turn_makes_one_call_of_each_kind_with_the_answers_it_gives_alone(app: PulseApp) -> None:
    requests = _mixed(34)
    alone = [_turn(app, [request]) for request in requests]
    assert all(calls == 1 for _, calls in alone)
    together, calls = _turn(app, requests)
    assert calls == 2  # one for the plain requests, one for those asking reasons: not one per request
    assert together == [answers[0] for answers, _ in alone]  # byte for byte
    assert all(status == 200 for status, _ in together)


def test_a_turn_of_plain_requests_makes_one_call(app: PulseApp) -> None:
    requests = [request for i, request in enumerate(_mixed(35)) if i % 3 != 0]
    _, calls = _turn(app, requests)
    assert calls == 1


def test_a_bad_request_in_the_turn_is_answered_alone(app: PulseApp) -> None:
    good = _mixed(36)[1:4]
    bad = [(INFER_ROUTE, b'{"inputs": []}'), (GRPC_ROUTE, b"\xff not protobuf")]
    together, _ = _turn(app, [good[0], bad[0], good[1], bad[1], good[2]])
    assert [together[i] for i in (0, 2, 4)] == [_turn(app, [request])[0][0] for request in good]
    assert together[1][0] == 400 and together[3][0] == 400


def test_a_failing_shared_call_fails_only_the_request_at_fault(app: PulseApp, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = [_json(np.full((1, 6), 2, np.float32)), _grpc(np.full((1, 6), 7, np.float32)), _grpc(np.ones((1, 6)))]
    alone = [_turn(app, [request])[0][0] for request in requests]
    real = infer_module.score_infers

    def fails_with_the_marked_row(served, metrics, parsed):  # type: ignore[no-untyped-def]
        if any((item.request.X == 7).any() for item in parsed):
            raise RuntimeError("a row onnxruntime cannot take")
        return real(served, metrics, parsed)

    monkeypatch.setattr(infer_module, "score_infers", fails_with_the_marked_row)
    together, _ = _turn(app, requests)
    assert together[0] == alone[0] and together[2] == alone[2]
    assert together[1] == (500, b'{"error":"Internal Server Error"}')


def _predicts(seed: int) -> list[tuple[str, bytes]]:
    """/predict bodies: single objects and arrays, with ids or not, plain and with explain=1..3."""
    rng = np.random.default_rng(seed)
    features = ("total_events", "total_sessions", "avg_events_per_session", "revenue_per_session", "active_days",
                "days_since_last_event")  # fmt: skip
    requests = []
    for i in range(15):
        rows = [{name: float(rng.integers(1, 30)) for name in features} for _ in range(int(rng.integers(1, 4)))]
        if i % 4 == 1:
            rows = [{"id": f"user-{i}-{j}", **row} for j, row in enumerate(rows)]
        body = json.dumps(rows[0] if i % 2 == 0 else rows).encode()
        requests.append((PREDICT_ROUTE + (f"?explain={i % 3 + 1}" if i % 5 in (0, 2, 3) else ""), body))
    return requests


def test_predicts_with_and_without_reasons_make_one_call_of_each_kind(app: PulseApp) -> None:
    requests = _predicts(34)
    alone = [_turn(app, [request]) for request in requests]
    together, calls = _turn(app, requests)
    assert calls == 2
    assert together == [answers[0] for answers, _ in alone]
    assert all(status == 200 for status, _ in together)
    explained = [json.loads(body) for (target, _), (_, body) in zip(requests, together, strict=True) if "?" in target]
    assert all("reasons" in (item if isinstance(item, dict) else item[0]) for item in explained)


def test_a_turn_of_every_kind_makes_one_call_per_kind(app: PulseApp) -> None:
    _, calls = _turn(app, _predicts(35) + _mixed(35))
    assert calls == 4  # /predict plain, /predict explained, V2 plain, V2 explained


def test_a_bad_explain_is_answered_alone_in_a_turn(app: PulseApp) -> None:
    good = _predicts(36)[:3]
    bad = (PREDICT_ROUTE + "?explain=99", good[0][1])
    together, _ = _turn(app, [good[0], bad, good[1], good[2]])
    assert [together[i] for i in (0, 2, 3)] == [_turn(app, [request])[0][0] for request in good]
    assert together[1][0] == 422 and b"explain" in together[1][1]


def test_batches_take_turns_with_the_loop_whichever_door_they_came_by(app: PulseApp) -> None:
    """Three 1000-row bodies handed over in one loop turn (as the ASGI and gRPC doors hand theirs), and a probe's
    callback behind them: each batch gets a turn of its own and the probe runs after the first, not after all
    three."""
    from server.pipeline.coalesce import TURN_BODY_BYTES, AwaitedRequest

    route, body = _json(np.random.default_rng(5).uniform(0, 9, (1000, 6)).astype(np.float32))
    assert len(body) >= TURN_BODY_BYTES
    answered_at_probe: list[int] = []

    async def main() -> None:
        requests = [AwaitedRequest(time.perf_counter(), route, body) for _ in range(3)]
        for request in requests:  # as every door hands a body over: its bytes held until it is answered
            app.state.body_budget.hold(len(body))
            request.reserved = len(body)
        answers = [asyncio.ensure_future(app.coalescer.answer(request)) for request in requests]
        await asyncio.sleep(0)  # every request is queued in this turn
        probe = [request.answered.done() for request in requests]
        asyncio.get_running_loop().call_soon(lambda: answered_at_probe.append(sum(r.answered.done() for r in requests)))
        assert [answer.status for answer in await asyncio.gather(*answers)] == [200, 200, 200]
        assert probe == [False, False, False]

    asyncio.run(main())
    assert app.state.body_budget.held == 0
    assert answered_at_probe == [1]  # one batch's turn, then the probe, then the next batch's
