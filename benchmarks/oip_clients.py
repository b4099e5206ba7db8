"""Every call of the Open Inference Protocol's reference clients against a running server, as their users write
them: NVIDIA's ``tritonclient`` (HTTP and gRPC) and the KServe SDK (REST and gRPC).

    python -m benchmarks.oip_clients triton-http --http 127.0.0.1:8000 --grpc 127.0.0.1:8001 --rows rows.npy

prints one JSON object: each call's name and what came back (``{"value": ...}``, or ``{"error": ..., "code": ...}``
for a call the client raised on). One client per process: Triton's and KServe's generated protobuf modules declare
the same ``inference.*`` names and cannot be imported into one process together. The tests read the output and
check it against onnxruntime in their own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

MODEL, INPUT, OUTPUT = "churn", "features", "probabilities"
Calls = dict[str, Callable[[], Any]]


# _fresh: both HTTP clients write Inference-Header-Content-Length into the headers dict the caller passes
# (tritonclient 2.73 and kserve 0.21), so a dict reused for a JSON call after a binary one carries a stale length
# and the server splits the body where the client says. Their users reusing one dict hit the same 400.


def _record(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    try:
        results[name] = {"value": _plain(call())}
    except Exception as exc:  # the client's own exception: what its user would catch
        results[name] = {"error": str(exc), "code": _code(exc), "type": type(exc).__name__}


def _code(exc: Exception) -> str | None:
    status = getattr(exc, "status", None)  # tritonclient: "400" / "StatusCode.NOT_FOUND"
    if callable(status):
        status = status()
    if status is None and hasattr(exc, "code") and callable(exc.code):  # grpc.aio's AioRpcError
        status = exc.code()
    response = getattr(exc, "response", None)  # httpx (KServe REST)
    if status is None and response is not None:
        status = response.status_code
    return None if status is None else str(status)


ROW_IDS = [f"user-{i}-é" for i in range(100)]  # one caller id per row (not ASCII: UTF-8 both ways)


def _key(output: str) -> str:
    """An output's key in a call's result: the ``id`` output (row ids) beside the request's ``id``."""
    return "row_ids" if output == "id" else output


def _kserve_inputs(infer_input: Any, rows: npt.NDArray[Any], kwargs: dict[str, Any], binary: bool) -> list[Any]:
    tensor = infer_input(kwargs.pop("input_name", INPUT), list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    ids = kwargs.pop("ids", None)
    if ids is None:
        return [tensor]
    id_tensor = infer_input("id", [len(ids)], "BYTES")
    id_tensor.set_data_from_numpy(np.array(ids, dtype=object), binary_data=binary)
    return [tensor, id_tensor]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist()) if value.dtype == object else value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def triton(transport: str, url: str, X: npt.NDArray[np.float32], key: str | None) -> dict[str, Any]:
    if transport == "http":
        import tritonclient.http as client
    else:
        import tritonclient.grpc as client
    headers = {"authorization": f"Bearer {key}"} if key else None
    c = client.InferenceServerClient(url)
    version = c.get_model_metadata(MODEL, headers=headers, **_as_json(transport))["versions"][0]

    def infer(rows: npt.NDArray[Any], binary_in: bool = True, binary_out: bool | None = None, **kwargs: Any) -> Any:
        tensor = client.InferInput(kwargs.pop("input_name", INPUT), list(rows.shape), kwargs.pop("datatype", "FP32"))
        tensors = [tensor]
        ids = kwargs.pop("ids", None)
        if ids is not None:  # one caller id per row: a BYTES input named "id", echoed as an output
            tensors.append(client.InferInput("id", [len(ids)], "BYTES"))
        for t, data in zip(tensors, (rows, np.array(ids, dtype=object)), strict=False):
            if transport == "http":
                t.set_data_from_numpy(data, binary_data=binary_in)
            else:
                t.set_data_from_numpy(data)
        outputs = None
        if binary_out is not None:
            outputs = [client.InferRequestedOutput(OUTPUT, binary_data=binary_out)] if transport == "http" else None
        kwargs["headers"] = dict(kwargs.get("headers", headers) or {})  # a copy each call: see _fresh
        result = c.infer(kwargs.pop("model", MODEL), tensors, outputs=outputs, **kwargs)
        response = result.get_response() if transport == "http" else result.get_response(as_json=True)
        names = [o["name"] for o in response["outputs"]]
        return {"id": response.get("id", ""), **{_key(name): result.as_numpy(name) for name in names}}

    calls: Calls = {
        "is_server_live": lambda: c.is_server_live(headers=headers),
        "is_server_ready": lambda: c.is_server_ready(headers=headers),
        "is_model_ready": lambda: c.is_model_ready(MODEL, headers=headers),
        "is_model_ready(version)": lambda: c.is_model_ready(MODEL, version, headers=headers),
        "get_server_metadata": lambda: c.get_server_metadata(headers=headers, **_as_json(transport)),
        "get_model_metadata": lambda: c.get_model_metadata(MODEL, headers=headers, **_as_json(transport)),
        "get_model_config": lambda: c.get_model_config(MODEL, headers=headers, **_as_json(transport)),
        "infer": lambda: infer(X, request_id="r-1"),
        "infer(model_version)": lambda: infer(X, model_version=version),
        "infer(explain)": lambda: infer(X, parameters={"explain": True}),
        "infer(one row)": lambda: infer(X[:1]),
        "infer(ids)": lambda: infer(X, ids=ROW_IDS[: len(X)]),
        "error: wrong shape": lambda: infer(np.ascontiguousarray(X[:, :-1])),
        "error: wrong datatype": lambda: infer(X.astype(np.float64), datatype="FP64"),
        "error: unknown input": lambda: infer(X, input_name="nope"),
        "error: negative value": lambda: infer(-X - 1),
        "error: unknown model": lambda: infer(X, model="nope"),
        "error: unknown version": lambda: infer(X, model_version="nope"),
        "error: no key": lambda: infer(X, headers={}),
        "error: get_inference_statistics": lambda: c.get_inference_statistics(MODEL, headers=headers),
    }
    if transport == "http":
        calls |= {
            "infer(json in, json out)": lambda: infer(X, binary_in=False, binary_out=False),
            "infer(json in, binary out)": lambda: infer(X, binary_in=False, binary_out=True),
            "infer(binary in, json out)": lambda: infer(X, binary_in=True, binary_out=False),
            "infer(ids, json in)": lambda: infer(X, binary_in=False, ids=ROW_IDS[: len(X)]),
        }
    results: dict[str, Any] = {"version": version}
    for name, call in calls.items():
        _record(results, name, call)
    c.close()
    return results


def _as_json(transport: str) -> dict[str, bool]:
    return {} if transport == "http" else {"as_json": True}


def kserve(transport: str, url: str, X: npt.NDArray[np.float32], key: str | None) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    headers = {"authorization": f"Bearer {key}"} if key else None
    results: dict[str, Any] = {}

    async def main() -> None:
        if transport == "rest":
            rest = InferenceRESTClient(RESTConfig(protocol="v2"))
            base = f"http://{url}"

            async def infer(rows: npt.NDArray[Any], binary: bool = False, **kwargs: Any) -> Any:
                tensors = _kserve_inputs(InferInput, rows, kwargs, binary)
                model = kwargs.pop("model", MODEL)
                request = InferRequest(model_name=model, infer_inputs=tensors, request_id=kwargs.pop("id", None))
                fresh = dict(kwargs.pop("headers", headers) or {})  # a copy each call: see _fresh
                response = await rest.infer(base, request, model_name=model, headers=fresh)
                return {"id": response.id or "", **{_key(o.name): o.as_numpy() for o in response.outputs}}

            calls = {
                "is_server_live": lambda: rest.is_server_live(base, headers=headers),
                "is_server_ready": lambda: rest.is_server_ready(base, headers=headers),
                "is_model_ready": lambda: rest.is_model_ready(base, MODEL, headers=headers),
                "infer": lambda: infer(X, id="k-1"),
                "infer(binary)": lambda: infer(X, binary=True),
                "infer(one row)": lambda: infer(X[:1]),
            }
            close = rest.close
        else:
            grpc_client = InferenceGRPCClient(url)

            async def infer(rows: npt.NDArray[Any], binary: bool = False, **kwargs: Any) -> Any:
                tensors = _kserve_inputs(InferInput, rows, kwargs, binary)
                request = InferRequest(
                    model_name=kwargs.pop("model", MODEL), infer_inputs=tensors, request_id=kwargs.pop("id", None)
                )
                metadata = tuple((kwargs.pop("headers", headers) or {}).items())
                response = await grpc_client.infer(request, headers=metadata)
                return {"id": response.id or "", **{_key(o.name): o.as_numpy() for o in response.outputs}}

            calls = {
                "is_server_live": lambda: grpc_client.is_server_live(headers=tuple((headers or {}).items())),
                "is_server_ready": lambda: grpc_client.is_server_ready(headers=tuple((headers or {}).items())),
                "is_model_ready": lambda: grpc_client.is_model_ready(MODEL, headers=tuple((headers or {}).items())),
                "infer": lambda: infer(X, id="k-1"),
                "infer(raw)": lambda: infer(X, binary=True),
                "infer(one row)": lambda: infer(X[:1]),
            }
            close = grpc_client.close
        calls |= {
            "infer(ids)": lambda: infer(X, ids=ROW_IDS[: len(X)]),
            "error: wrong shape": lambda: infer(np.ascontiguousarray(X[:, :-1])),
            "error: unknown input": lambda: infer(X, input_name="nope"),
            "error: negative value": lambda: infer(-X - 1),
            "error: unknown model": lambda: infer(X, model="nope"),
            "error: no key": lambda: infer(X, headers={}),
        }
        for name, call in calls.items():
            try:
                results[name] = {"value": _plain(await call())}
            except Exception as exc:
                results[name] = {"error": str(exc), "code": _code(exc), "type": type(exc).__name__}
        await close()

    asyncio.run(main())
    return results


def run(client: str, http: str, grpc: str, X: npt.NDArray[np.float32], key: str | None) -> dict[str, Any]:
    family, transport = client.split("-")
    if family == "triton":
        return triton(transport, http if transport == "http" else grpc, X, key)
    return kserve(transport, http if transport == "rest" else grpc, X, key)


CLIENTS = ("triton-http", "triton-grpc", "kserve-rest", "kserve-grpc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.oip_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=CLIENTS)
    parser.add_argument("--http", required=True, help="host:port of the server's HTTP listener")
    parser.add_argument("--grpc", required=True, help="host:port of its gRPC listener (PULSE_GRPC_PORT)")
    parser.add_argument("--rows", required=True, help="a .npy file of FP32 rows [N, features] to score")
    parser.add_argument("--key", help="an API key with the predict scope, when the server has keys on")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # importing kserve parses the command line as its model server's (kserve 0.21)
    X = np.load(args.rows).astype(np.float32)
    json.dump(run(args.client, args.http, args.grpc, X, args.key), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
