"""A turn's traced requests, in-process: each sampled request gets its own span, the ones scored in the same
onnxruntime call link to the first one's, a request refused before scoring has no scoring event, and a request its
caller did not sample has no span. (The spans' way to a real OTLP receiver is tests/e2e/test_tracing.py's.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.config.settings import Settings
from server.http.app import PulseApp, create_app
from server.monitoring.tracing import TraceConfig, Tracer
from server.pipeline.pipeline import PREDICT_ROUTE, Request
from tests.support import BEHAVIOUR_ROW

pytestmark = pytest.mark.http

TRACE = "4bf92f3577b34da6a3ce929d0e0e47"  # and two hex digits: a trace per request


@pytest.fixture(scope="module")
def app(behaviour_model: Path) -> Iterator[PulseApp]:
    application = create_app(Settings(model_path=behaviour_model))
    with TestClient(application):
        yield application


def test_requests_scored_together_link_to_the_first_ones_span(
    app: PulseApp, capsys: pytest.CaptureFixture[str]
) -> None:
    config = TraceConfig.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "10"})
    assert config is not None
    tracer = Tracer(config)
    tracer.start()
    body = json.dumps(BEHAVIOUR_ROW).encode()
    bodies = [body, body, b'{"total_events": -1}', body, body]
    flags = ["01", "01", "01", "00", "01"]  # the fourth caller did not sample its trace
    requests = [
        Request(
            PREDICT_ROUTE,
            b"",
            sent,
            time.perf_counter(),
            trace_context=(f"00-{TRACE}{i:02x}-00f067aa0ba902b7-{flag}".encode(), None),
        )
        for i, (sent, flag) in enumerate(zip(bodies, flags, strict=True))
    ]
    app.state.tracer = tracer
    try:
        answers = app.pipeline.answer(requests)
    finally:
        app.state.tracer = None
        tracer.shutdown()
    assert [answer.status for answer in answers] == [200, 200, 422, 200, 200]
    spans = {span["trace_id"][-2:]: span for span in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(spans) == ["00", "01", "02", "04"]
    first = spans["00"]
    assert first["links"] == [] and [event["name"] for event in first["events"]] == ["parsed", "score", "scored"]
    shared = [{"trace_id": first["trace_id"], "span_id": first["span_id"]}]
    assert spans["01"]["links"] == shared and spans["04"]["links"] == shared  # one onnxruntime call, three requests
    assert spans["02"]["events"] == [] and spans["02"]["links"] == []  # refused before scoring (422)
    assert spans["02"]["attributes"]["http.response.status_code"] == 422 and spans["02"]["error"] is False
    assert all(span["parent_id"] == "00f067aa0ba902b7" for span in spans.values())
    assert tracer.counters == {"spans_exported": 4, "spans_dropped": 0}
