"""``POST /predict`` bodies scored: each parsed and validated on its own, then the valid rows of all of them in one
onnxruntime call (one request, or every request a connection turn collected), each answered with its own results.

The requests with ``explain=K`` (any K) are scored together too, in one call of the graph that gives the reasons
(:func:`score_explained`), each answered with its own K. Drift, the request log and the stage timings
are fed here, once, whichever door the requests came in by.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from server.core.errors import ValidationFailed, field_error
from server.core.ids import Id
from server.core.served import ServedModel
from server.core.validation import Columns
from server.explain.reasons import explain_count, render_explained
from server.monitoring.metrics import Metrics
from server.pipeline.scoring import log_rows, score

ROUTE = "/predict"
Parsed = list[float] | npt.NDArray[np.float32] | Columns  # a request's rows, as the parser gives them


@dataclass(slots=True)
class ParsedRequest:
    index: int  # its place among the requests being answered
    rows: Parsed
    started: float
    parsed_at: float
    ids: list[Id | None] | None = None  # the caller's ids, one per row, when it sent any
    k: int | None = None  # explain=K: the reasons each row is answered with
    trace_id: str | None = None  # its trace, when it is traced (every request-log line of it carries it)


def explain_asked(served: ServedModel, rows: Parsed, query: bytes) -> int | None:
    """K when the query asks ``explain=K`` (a 422 naming the parameter when K is not valid), ``None`` for any other
    query. Reasons are given for rows sent as objects only."""
    if isinstance(rows, Columns):
        message = "Reasons are given for rows sent as objects, not as columns"
        raise ValidationFailed([field_error(["query", "explain"], message, "value_error")])
    return explain_count(query, served.model)


def score_explained(served: ServedModel, metrics: Metrics, parsed: list[ParsedRequest]) -> list[bytes]:
    """The response bodies of ``parsed`` (in order, each with its own ``explain=K``), the probabilities and the
    contributions of all their rows from one onnxruntime call (model.onnx computes both)."""
    X = _stack([request.rows for request in parsed])
    call = score(served, metrics, X, explain=True)
    proba, contributions = call.churn, call.contributions
    assert contributions is not None
    scored = time.perf_counter()
    payloads, read_parse, render, start = [], [], [], 0
    for request in parsed:
        assert request.k is not None
        end = start + _count(request.rows)
        payloads.append(
            render_explained(
                served.model, X[start:end], proba[start:end], contributions[start:end], request.k,
                type(request.rows) is list, request.ids,
            )
        )  # fmt: skip
        traces = None if request.trace_id is None else [request.trace_id] * (end - start)
        log_rows(served, X[start:end], proba[start:end], contributions[start:end], request.ids, None, traces)
        rendered = time.perf_counter()
        read_parse.append(request.parsed_at - request.started)
        render.append(rendered - scored)
        scored, start = rendered, end
    metrics.observe_stages_all(ROUTE, read_parse, call.seconds, render)
    return payloads


def score_together(served: ServedModel, metrics: Metrics, parsed: list[ParsedRequest]) -> list[bytes]:
    """The response bodies of ``parsed`` (in order), their rows scored in one onnxruntime call."""
    model, drift = served.model, served.drift
    call_started = time.perf_counter()
    single: Any = None
    if len(parsed) == 1 and type(parsed[0].rows) is list:
        single = parsed[0].rows
        proba = np.array([model.predict_one(single)], dtype=np.float32)
        X = None
    else:
        X = _stack([request.rows for request in parsed])
        proba = model.churn_probability(X)
    scored = time.perf_counter()
    inference = scored - call_started
    metrics.observe_call(inference, len(proba))
    payloads, start = [], 0
    read_parse, render = [], []
    for request in parsed:
        rows = request.rows
        ids = request.ids
        if type(rows) is list:
            payloads.append(served.render_one(proba[start], ids[0] if ids else None))
            start += 1
        elif type(rows) is Columns:
            payloads.append(served.render_columns(proba[start : start + len(rows)], ids))
            start += len(rows)
        else:
            payloads.append(served.render_batch(proba[start : start + len(rows)], ids))
            start += len(rows)
        rendered = time.perf_counter()
        read_parse.append(request.parsed_at - request.started)
        render.append(rendered - scored)
        scored = rendered
    metrics.observe_stages_all(ROUTE, read_parse, inference, render)
    if drift is not None:
        if X is None:
            drift.add(single, proba[0])
        else:
            drift.add_batch(X, proba)
    if served.request_log is not None and served.request_log.active:
        rows = np.array([single], dtype=np.float32) if X is None else X
        log_rows(served, rows, proba, None, _all_ids(parsed), None, _all_traces(parsed))
    return payloads


def _all_ids(parsed: list[ParsedRequest]) -> list[Id | None] | None:
    """One id per scored row, in order (``None`` where a request sent none); ``None`` when no request sent any."""
    if all(request.ids is None for request in parsed):
        return None
    ids: list[Id | None] = []
    for request in parsed:
        ids.extend(request.ids if request.ids is not None else [None] * _count(request.rows))
    return ids


def _all_traces(parsed: list[ParsedRequest]) -> list[str | None] | None:
    """Each scored row's trace id, in order; ``None`` when no request of the turn is traced."""
    if all(request.trace_id is None for request in parsed):
        return None
    return [request.trace_id for request in parsed for _ in range(_count(request.rows))]


def _count(rows: Parsed) -> int:
    return 1 if isinstance(rows, list) else len(rows)


def _stack(parts: list[Parsed]) -> npt.NDArray[np.float32]:
    """One float32 matrix of every request's rows, in order."""
    if all(type(part) is list for part in parts):
        return np.array(parts, dtype=np.float32)
    return np.concatenate([_matrix(part) for part in parts])


def _matrix(part: Parsed) -> npt.NDArray[np.float32]:
    if isinstance(part, list):
        return np.array([part], dtype=np.float32)
    return part.X if isinstance(part, Columns) else part
