"""Hostile HTTP requests as hypothesis strategies, and the check every response must pass.

Used twice: by the property tests in-process (``tests/http/test_fuzz.py``) and by the reliability suite against a
real uvicorn process (``python -m benchmarks reliability``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from server.config.settings import Settings
from server.http.routes import DOCS_ASSETS, ENDPOINTS


def _example_paths() -> tuple[str, ...]:
    """Every path of the server's route table, with the served model's name and another in path parameters."""
    paths: list[str] = [DOCS_ASSETS + "/swagger-ui.css"]
    for endpoint in ENDPOINTS:
        if "{model_name}" in endpoint.path:
            paths += [endpoint.path.replace("{model_name}", name) for name in (Settings().model_name, "other")]
        else:
            paths.append(endpoint.path)
    return tuple(dict.fromkeys(paths))


ROUTES = _example_paths()
NOT_JSON_ROUTES = tuple(
    e.path for e in ENDPOINTS if any(r.media_type != "application/json" for r in e.responses.values())
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/jsonx",
)
LEAKS = (b"Traceback", b'File "', b"site-packages", b"/work/", b"/usr/lib/python", b'.py"', b"onnxruntime 1.")


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    method: str
    path: str
    content_type: str | None
    body: bytes


def _numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 0.0, -0.0, 1e39, 3.4028234663852886e38, 5e-324, 2**63, -1]),
    )


_json_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers(), st.text(max_size=30)),
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


def _rows(features: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    value = st.one_of(_numbers(), _json_values)
    base = st.fixed_dictionaries(
        {name: st.one_of(st.floats(0, 1e6), st.integers(0, 10**6), value) for name in features}
    )
    extra = st.dictionaries(st.one_of(st.sampled_from(list(features)), st.text(max_size=15)), value, max_size=3)
    drop = st.sets(st.sampled_from(list(features)), max_size=2)
    return st.builds(
        lambda row, more, gone: {k: v for k, v in {**row, **more}.items() if k not in gone}, base, extra, drop
    )


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


def bodies(features: Sequence[str], max_body: int) -> st.SearchStrategy[bytes]:
    flag = st.one_of(st.booleans(), _json_values)  # what binary_data_output, binary_data and explain get
    v2 = st.builds(
        lambda n, data, name, dtype, parameters, outputs: {
            "inputs": [{"name": name, "shape": [n, len(features)], "datatype": dtype, "data": data}],
            **({} if parameters is None else {"parameters": parameters}),
            **({} if outputs is None else {"outputs": outputs}),
        },
        st.integers(-1, 3),
        st.lists(_numbers(), max_size=16),
        st.sampled_from(["features", "x"]),
        st.sampled_from(["FP32", "INT64", "BYTES"]),
        st.one_of(st.none(), st.fixed_dictionaries({}, optional={"binary_data_output": flag, "explain": flag})),
        st.one_of(
            st.none(),
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["probabilities", "contributions", "x"])},
                    optional={"parameters": st.one_of(st.fixed_dictionaries({"binary_data": flag}), _json_values)},
                ),
                max_size=3,
            ),
        ),
    )
    return st.one_of(
        _rows(features).map(_encode),
        st.lists(_rows(features), max_size=12).map(_encode),
        v2.map(_encode),
        _json_values.map(_encode),
        st.binary(max_size=512),
        st.text(max_size=200).map(lambda t: t.encode("utf-16")),
        _json_values.map(_encode).map(lambda b: b[: max(0, len(b) - 1)]),  # truncated JSON
        st.sampled_from([b"[" * 3000, b"{" * 3000, b" " * (max_body + 1), b"[]", b"{}", b"NaN", b"\x00"]),
    )


def requests(features: Sequence[str], max_body: int) -> st.SearchStrategy[FuzzRequest]:
    paths = st.one_of(
        st.sampled_from(ROUTES), st.sampled_from(ROUTES), st.text(max_size=40).map(lambda t: "/" + quote(t, safe="/"))
    )
    return st.builds(
        FuzzRequest,
        st.sampled_from(METHODS),
        paths,
        st.one_of(st.none(), st.sampled_from(CONTENT_TYPES)),
        bodies(features, max_body),
    )


def problems(request: FuzzRequest, status: int, headers: Mapping[str, str], body: bytes) -> list[str]:
    """Everything wrong with a response: a 5xx, a non-JSON error, a leaked internal."""
    found = []
    if status >= 500:
        found.append(f"{status} for {request.method} {request.path}")
    expects_json = (
        request.method != "HEAD"
        and status != 304
        and not (request.path in NOT_JSON_ROUTES and status == 200)
        and not (request.path.startswith("/docs/assets/") and status == 200)
    )
    header_length = next((v for k, v in headers.items() if k.lower() == "inference-header-content-length"), None)
    if header_length is not None and status == 200:  # V2 binary outputs: the JSON, then the tensors' bytes
        body = body[: int(header_length)]
    if expects_json:
        try:
            json.loads(body)
        except ValueError:
            found.append(f"non-JSON body {body[:60]!r} ({status}) for {request.method} {request.path}")
    for leak in LEAKS:
        if leak in body and not (request.path.startswith("/docs") or request.path == "/openapi.json"):
            found.append(f"response leaks {leak!r} for {request.method} {request.path}")
    if any(k.lower() == "server" for k in headers):
        found.append("a Server header names the software")
    return found
