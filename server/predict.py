"""``POST /predict``, the product's hot path, as a plain ASGI handler, and the model prepared for it.

No Request/Response objects, no routing, no middleware: the outer callable in ``server.app`` hands the scope
straight here. Everything the handler needs is prepared once, when the model loads (:class:`ServedModel`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson
from starlette.types import Receive, Scope, Send

from server.asgi import (
    CLOSE_HEADER,
    GATED_BODY_BYTES,
    JSON_HEADER,
    ORJSON_NUMPY,
    is_json,
    read_body,
    refuse_encoded,
)
from server.drift import DriftWindow
from server.errors import (
    CLIENT_CLOSED,
    INTERNAL_ERROR_BODY,
    ApiError,
    ClientDisconnected,
    NotReady,
    UnsupportedMediaType,
    ValidationFailed,
    field_error,
)
from server.explain import explain_count, render_explained
from server.model import Model
from server.request_log import ModelLog
from server.validation import Columns, RowParser

if TYPE_CHECKING:
    from server.state import ServerState

logger = logging.getLogger(__name__)

ROUTE = "/predict"


class ServedModel:
    """The loaded model with everything the handlers need from it prepared once: the row parser, the constant
    parts of responses, and the rendered ``/metadata`` and ``/openapi.json`` documents."""

    def __init__(
        self, model: Model, max_batch: int, request_log: ModelLog | None, metadata: bytes, openapi: bytes
    ) -> None:
        info = model.info
        self.model = model
        self.metadata = metadata
        self.openapi = openapi
        self.info = info
        self.parser = RowParser(info.features, info.minimums, max_batch)
        self.threshold = info.threshold
        self.version = info.version
        self.request_log = request_log
        constant = orjson.dumps({"threshold": info.threshold, "model_version": info.version})[1:]
        self._churned_tail = b',"churn":true,' + constant
        self._stayed_tail = b',"churn":false,' + constant

    def render_one(self, p: Any) -> bytes:
        return orjson.dumps(
            {
                "churn_probability": p,
                "churn": p >= self.threshold,
                "threshold": self.threshold,
                "model_version": self.version,
            },
            option=ORJSON_NUMPY,
        )

    def render_columns(self, proba: npt.NDArray[np.float32]) -> bytes:
        """The columnar answer to a columnar batch: one list per result field."""
        return orjson.dumps(
            {
                "churn_probability": proba,
                "churn": proba >= self.threshold,
                "threshold": self.threshold,
                "model_version": self.version,
            },
            option=ORJSON_NUMPY,
        )

    def render_batch(self, proba: npt.NDArray[np.float32]) -> bytes:
        # Same JSON as one dict per row, built from bytes: orjson formats the probabilities in one C call.
        numbers = orjson.dumps(proba, option=ORJSON_NUMPY)[1:-1].split(b",")
        churned, stayed = self._churned_tail, self._stayed_tail
        rows = [
            b'{"churn_probability":' + number + (churned if churn else stayed)
            for number, churn in zip(numbers, (proba >= self.threshold).tolist(), strict=True)
        ]
        return b"[" + b",".join(rows) + b"]"


def explained(
    served: ServedModel,
    rows: list[float] | npt.NDArray[np.float32] | Columns,
    query_string: bytes,
    drift: DriftWindow | None,
) -> bytes:
    """The results with SHAP reasons when the query asks ``explain=K``; plain results for any other query."""
    if isinstance(rows, Columns):
        raise ValidationFailed(
            [
                field_error(
                    ["query", "explain"], "Reasons are given for rows sent as objects, not as columns", "value_error"
                )
            ]
        )
    one = isinstance(rows, list)
    X: npt.NDArray[np.float32] = np.array([rows], dtype=np.float32) if isinstance(rows, list) else rows
    k = explain_count(query_string, served.model)
    proba = served.model.churn_probability(X)
    if drift is not None:
        drift.add_batch(X, proba)
    if k is None:
        payload = served.render_one(proba[0]) if one else served.render_batch(proba)
        reasons = None
    else:
        payload, reasons = render_explained(served.model, X, proba, k, one)
    if served.request_log is not None:
        served.request_log.submit(X, proba, reasons)
    return payload


async def predict(state: ServerState, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one ``POST /predict``: a JSON object gives one result, a JSON array one result per row."""
    started = time.perf_counter()
    metrics = state.metrics
    metrics.in_flight += 1
    status = 200
    closes = state.draining
    try:  # whatever happens below, the gauge and the counters are settled in `finally`
        headers = [JSON_HEADER]
        try:
            served = state.served
            if served is None:
                raise NotReady("model not loaded yet")
            content_type = b""
            content_length = content_encoding = None
            for name, value in scope["headers"]:
                if name == b"content-type":
                    content_type = value
                elif name == b"content-length":
                    content_length = value
                elif name == b"content-encoding":
                    content_encoding = value
            if content_type != b"application/json" and not is_json(content_type):
                raise UnsupportedMediaType("Content-Type must be application/json")
            if content_encoding is not None:
                refuse_encoded(content_encoding)
            body = await read_body(receive, content_length, state.settings.max_body_bytes, state.body_budget)
            if len(body) > GATED_BODY_BYTES:
                async with state.batch_gate:
                    payload = _answer(state, served, body, scope["query_string"], started)
            else:
                payload = _answer(state, served, body, scope["query_string"], started)
        except ApiError as exc:
            status, payload, closes = exc.status_code, exc.body(), closes or exc.closes_connection
            if exc.headers:
                headers += [(name.encode(), value.encode()) for name, value in exc.headers.items()]
        except ClientDisconnected:
            status = CLIENT_CLOSED
            return
        except Exception:
            logger.exception("unexpected error in /predict")
            status, payload = 500, INTERNAL_ERROR_BODY
        headers.append((b"content-length", str(len(payload)).encode()))
        if closes:
            headers.append(CLOSE_HEADER)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
    finally:
        metrics.in_flight -= 1
        if status != CLIENT_CLOSED:
            metrics.observe_request(ROUTE, status, time.perf_counter() - started)


def _answer(state: ServerState, served: ServedModel, body: bytes, query_string: bytes, started: float) -> bytes:
    """Parse, validate and score ``body``; the response body. Raises an ``ApiError`` for a bad request."""
    metrics = state.metrics
    rows = served.parser.parse(body)
    parsed = time.perf_counter()
    drift = metrics.drift
    if query_string:
        payload = explained(served, rows, query_string, drift)
        metrics.observe_call(time.perf_counter() - parsed, 1 if isinstance(rows, list) else len(rows))
    elif isinstance(rows, list):
        p = served.model.predict_one(rows)
        scored = time.perf_counter()
        payload = served.render_one(p)
        metrics.observe_scoring(ROUTE, 1, parsed - started, scored - parsed, time.perf_counter() - scored)
        if drift is not None:
            drift.add(rows, p)
        if served.request_log is not None:
            served.request_log.submit(np.array([rows], dtype=np.float32), np.array([p]))
    else:
        X = rows.X if isinstance(rows, Columns) else rows
        proba = served.model.churn_probability(X)
        scored = time.perf_counter()
        payload = served.render_columns(proba) if isinstance(rows, Columns) else served.render_batch(proba)
        metrics.observe_scoring(ROUTE, len(X), parsed - started, scored - parsed, time.perf_counter() - scored)
        if drift is not None:
            drift.add_batch(X, proba)
        if served.request_log is not None:
            served.request_log.submit(X, proba)
    return payload
