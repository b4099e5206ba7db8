"""The Open Inference Protocol as its reference clients speak it: NVIDIA's ``tritonclient`` (HTTP and gRPC) and
the KServe SDK (REST and gRPC), unchanged, against a real server with API keys on and its gRPC port open.

Each client runs in a process of its own (``benchmarks.oip_clients``); its answers are checked here against
onnxruntime in this process: probabilities to 1e-6, ids echoed, reasons that add up, and every bad call a clean
error of the client's own kind with the status its user would branch on.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.oip_clients import ROW_IDS
from benchmarks.procs import (
    ROOT,
    ServerProcess,
    free_port,
    metric,
    python_command,
    run_server,
    self_signed_certificate,
    stop,
)
from common.model.loader import Model, load_model
from server.config.keys import hash_key
from tests.support import require_tool

pytestmark = pytest.mark.e2e

KEY = "pk-clients-" + "k" * 32
SCRAPER_KEY = "mk-clients-" + "m" * 32  # /metrics needs a metrics key with keys on


@pytest.fixture(scope="module")
def model(exported: Path) -> Model:
    return load_model(exported)


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    folder = tmp_path_factory.mktemp("clients")
    keys = folder / "keys.txt"
    keys.write_text(f"{hash_key(KEY)} predict clients\n{hash_key(SCRAPER_KEY)} metrics prometheus\n")
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    env = {"PULSE_GRPC_PORT": str(grpc_port), "PULSE_API_KEYS_FILE": str(keys)}
    with run_server(command, port, folder / "server.log", env=env) as proc:
        yield proc, grpc_port


@pytest.fixture(scope="module")
def rows(model: Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    rng = np.random.default_rng(28)
    X = rng.integers(0, 60, size=(5, len(model.info.features))).astype(np.float32)
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    np.save(path, X)
    return X, path


def _run(client: str, server: tuple[ServerProcess, int], rows_path: Path) -> dict[str, Any]:
    proc, grpc_port = server
    http = proc.url.removeprefix("http://")
    command = python_command(
        "-m", "benchmarks.oip_clients", client, "--http", http, "--grpc", f"127.0.0.1:{grpc_port}",
        "--rows", str(rows_path), "--key", KEY,
    )  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def _value(results: dict[str, Any], call: str) -> Any:
    assert "value" in results[call], f"{call}: {results[call]}"
    return results[call]["value"]


def _error(results: dict[str, Any], call: str) -> tuple[str, str]:
    assert "error" in results[call], f"{call} did not fail: {results[call]}"
    return str(results[call]["code"]), results[call]["error"]


def _check_scores(results: dict[str, Any], call: str, model: Model, X: np.ndarray) -> dict[str, Any]:
    answer = _value(results, call)
    np.testing.assert_allclose(np.array(answer["probabilities"]), model.predict_proba(X), rtol=0, atol=1e-6)
    return dict(answer)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_every_call(
    transport: str, server: tuple[ServerProcess, int], rows: tuple[np.ndarray, Path], model: Model
) -> None:
    X, path = rows
    results = _run(f"triton-{transport}", server, path)
    for call in ("is_server_live", "is_server_ready", "is_model_ready", "is_model_ready(version)"):
        assert _value(results, call) is True, call
    assert _value(results, "get_server_metadata")["name"] == "ml-pulsechecker"
    metadata = _value(results, "get_model_metadata")
    assert metadata["versions"] == [model.info.version] and metadata["inputs"][0]["name"] == model.info.input_name
    config = _value(results, "get_model_config")
    config = config.get("config", config)  # gRPC wraps it in ModelConfigResponse
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in config["input"][0]["dims"]] == [-1, len(model.info.features)]

    assert _check_scores(results, "infer", model, X)["id"] == "r-1"
    _check_scores(results, "infer(model_version)", model, X)
    _check_scores(results, "infer(one row)", model, X[:1])
    for call in ("infer(json in, json out)", "infer(json in, binary out)", "infer(binary in, json out)"):
        if transport == "http":
            _check_scores(results, call, model, X)
    for call in ("infer(ids)", *(["infer(ids, json in)"] if transport == "http" else [])):
        assert _check_scores(results, call, model, X)["row_ids"] == ROW_IDS[: len(X)], call  # echoed, UTF-8 intact
    explained = _check_scores(results, "infer(explain)", model, X)
    assert model.explainer is not None
    contributions = np.array(explained["contributions"])
    np.testing.assert_allclose(contributions, model.explainer.shap_values(X), rtol=0, atol=1e-6)

    http, n = transport == "http", len(model.info.features)
    expected = {
        "error: wrong shape": ("400" if http else "StatusCode.INVALID_ARGUMENT", f"input shape must be [N, {n}]"),
        "error: wrong datatype": ("400" if http else "StatusCode.INVALID_ARGUMENT", "datatype must be 'FP32'"),
        "error: unknown input": ("400" if http else "StatusCode.INVALID_ARGUMENT", "unknown input 'nope'"),
        "error: negative value": ("400" if http else "StatusCode.INVALID_ARGUMENT", "must be >= 0"),
        "error: unknown model": ("404" if http else "StatusCode.NOT_FOUND", "model 'nope' not found"),
        "error: unknown version": ("404" if http else "StatusCode.NOT_FOUND", "has no version 'nope'"),
        "error: no key": ("401" if http else "StatusCode.UNAUTHENTICATED", "missing or invalid API key"),
    }
    for call, (code, message) in expected.items():
        assert _error(results, call)[0] == code, (call, results[call])
        assert message in _error(results, call)[1], (call, results[call])
    code, message = _error(results, "error: get_inference_statistics")  # not served: the protocol's error
    assert code == ("404" if http else "StatusCode.UNIMPLEMENTED"), message


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_kserve_sdk_every_call(
    transport: str, server: tuple[ServerProcess, int], rows: tuple[np.ndarray, Path], model: Model
) -> None:
    X, path = rows
    results = _run(f"kserve-{transport}", server, path)
    for call in ("is_server_live", "is_server_ready", "is_model_ready"):
        assert _value(results, call) is True, call
    assert _check_scores(results, "infer", model, X)["id"] == "k-1"
    _check_scores(results, "infer(binary)" if transport == "rest" else "infer(raw)", model, X)
    _check_scores(results, "infer(one row)", model, X[:1])
    assert _check_scores(results, "infer(ids)", model, X)["row_ids"] == ROW_IDS[: len(X)]
    rest, n = transport == "rest", len(model.info.features)
    expected = {
        "error: wrong shape": ("400" if rest else "StatusCode.INVALID_ARGUMENT", f"input shape must be [N, {n}]"),
        "error: unknown input": ("400" if rest else "StatusCode.INVALID_ARGUMENT", "unknown input 'nope'"),
        "error: negative value": ("400" if rest else "StatusCode.INVALID_ARGUMENT", "must be >= 0"),
        "error: unknown model": ("404" if rest else "StatusCode.NOT_FOUND", "model 'nope' not found"),
        "error: no key": ("401" if rest else "StatusCode.UNAUTHENTICATED", "missing or invalid API key"),
    }
    for call, (code, message) in expected.items():
        assert _error(results, call)[0] == code, (call, results[call])
        assert message in _error(results, call)[1], (call, results[call])


def test_grpc_requests_are_counted_like_http_ones(
    server: tuple[ServerProcess, int], rows: tuple[np.ndarray, Path]
) -> None:
    """The gRPC door's requests land in the same metrics as HTTP's: per route and status, and rows scored."""
    proc, _ = server
    route = "/inference.GRPCInferenceService/ModelInfer"
    before = metric(proc.url, "pulse_http_requests_total", SCRAPER_KEY, route=route, status="200")
    rows_before = metric(proc.url, "pulse_predicted_rows_total", SCRAPER_KEY)
    _run("triton-grpc", server, rows[1])
    # infer, infer(model_version), infer(explain), infer(ids): 5 rows each; infer(one row): 1
    assert metric(proc.url, "pulse_http_requests_total", SCRAPER_KEY, route=route, status="200") - before == 5
    assert metric(proc.url, "pulse_predicted_rows_total", SCRAPER_KEY) - rows_before == 21
    assert metric(proc.url, "pulse_http_requests_total", SCRAPER_KEY, route=route, status="401") >= 1


def test_grpc_serves_the_swapped_model_on_every_worker(
    exported: Path, twin_model: Path, rows: tuple[np.ndarray, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two workers share the gRPC port; after an admin swap, every new gRPC connection (whichever worker the kernel
    gives it) answers with the new model's scores: the gRPC door serves what the pipeline serves."""
    X, path = rows
    folder = tmp_path_factory.mktemp("grpc-swap")
    admin = "ak-clients-" + "a" * 32
    (folder / "keys.txt").write_text(f"{hash_key(KEY)} predict clients\n{hash_key(admin)} admin ops\n")
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--workers", "2")
    env = {
        "PULSE_GRPC_PORT": str(grpc_port),
        "PULSE_API_KEYS_FILE": str(folder / "keys.txt"),
        "PULSE_LOG_LEVEL": "warning",
        "PULSE_MODEL_DIR": str(tmp_path_factory.getbasetemp()),  # every model fixture of this run lives under it
    }
    twin = load_model(twin_model)
    with run_server(command, port, folder / "server.log", env, timeout=60) as proc:
        request = urllib.request.Request(
            proc.url + "/admin/model",
            data=json.dumps({"path": str(twin_model)}).encode(),
            headers={"content-type": "application/json", "authorization": f"Bearer {admin}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert json.loads(response.read())["model_version"] == twin.info.version
        for _ in range(4):  # new processes, new connections: both workers, by the kernel's choice
            results = _run("triton-grpc", (proc, grpc_port), path)
            assert results["version"] == twin.info.version
            _check_scores(results, "infer", twin, X)


def test_grpc_speaks_tls_with_the_servers_certificate(
    exported: Path, model: Model, rows: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    """With PULSE_TLS_CERT/KEY the gRPC port is TLS too: a client that trusts the certificate gets its answer; a
    plain-text client gets none."""
    import grpc

    from server.core.v2_grpc import ModelInferRequest, ModelInferResponse

    require_tool("openssl", "apt-get install openssl")
    cert, key = self_signed_certificate(tmp_path)
    port, grpc_port = free_port(), free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--log-level", "warning")
    env = {"PULSE_GRPC_PORT": str(grpc_port), "PULSE_TLS_CERT": str(cert), "PULSE_TLS_KEY": str(key)}
    X = rows[0]
    request: Any = ModelInferRequest(model_name="churn", id="tls-1")
    request.inputs.add(name=model.info.input_name, datatype="FP32", shape=X.shape)
    request.raw_input_contents.append(X.astype("<f4").tobytes())
    method = "/inference.GRPCInferenceService/ModelInfer"
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials) as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            answer: Any = ModelInferResponse.FromString(
                channel.unary_unary(method)(request.SerializeToString(), timeout=30)
            )
        probabilities = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(list(answer.outputs[0].shape))
        assert answer.id == "tls-1"
        np.testing.assert_allclose(probabilities, model.predict_proba(X), rtol=0, atol=1e-6)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain:
            with pytest.raises(grpc.RpcError):
                plain.unary_unary(method)(request.SerializeToString(), timeout=5)
    finally:
        stop(process)
