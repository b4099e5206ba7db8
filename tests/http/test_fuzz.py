"""Property-based: whatever arrives (bodies, content types, sizes, unicode, methods, paths), the answer is a
non-5xx JSON response that leaks nothing. ``PULSE_FUZZ_EXAMPLES`` sizes the run (the nightly run uses 10,000)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from starlette.testclient import TestClient

from benchmarks.fuzz import FuzzRequest, problems, requests
from common.features import FEATURE_SETS
from tests.http.conftest import MAX_BODY

pytestmark = pytest.mark.http


@given(request=requests(FEATURE_SETS["seed"], MAX_BODY))
def test_no_request_gets_a_5xx_or_leaks_internals(client: TestClient, request: FuzzRequest) -> None:
    headers = {} if request.content_type is None else {"content-type": request.content_type}
    response = client.request(request.method, request.path, content=request.body, headers=headers)
    assert problems(request, response.status_code, response.headers, response.content) == []


@settings(max_examples=max(1, settings().max_examples // 2))
@given(request=requests(FEATURE_SETS["seed"], MAX_BODY))
def test_predict_answers_every_json_body_with_a_result_or_a_4xx(client: TestClient, request: FuzzRequest) -> None:
    response = client.post("/predict", content=request.body, headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 413, 422), response.text
    body = response.json()
    if response.status_code == 422:
        assert all(set(error) == {"loc", "msg", "type"} and error["loc"][0] == "body" for error in body["detail"])
    elif response.status_code == 200:
        results = body if isinstance(body, list) else [body]
        assert all(0.0 <= r["churn_probability"] <= 1.0 for r in results)
