"""The label loop on real processes: answers given with ids become realized outcomes, a shadow never touches an
answer under load, performance estimated before labels meets the labels, and every dashboard query has data in a
real Prometheus scraping a real server."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from benchmarks.estimate import estimate_period
from benchmarks.procs import free_port, http_get, http_post_json, python_command, run_server
from benchmarks.run import run_wrk
from common.events import EventColumns
from common.model.loader import load_model
from score.duckdb_engine import score_on_duckdb
from tests.support import require_tool, running_prometheus
from train.simulate import SimulationConfig, simulate_events

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
LABEL_DAYS = 30


def _period(folder: Path, exported: Path, users: int, seed: int) -> tuple[Path, Any, list[dict[str, Any]]]:
    """A simulated log, its cutoff (30 days before its end), and every user's features at the cutoff, with ids."""
    events = folder / "events.parquet"
    simulate_events(SimulationConfig(users=users, days=90, seed=seed), events)
    ((last,),) = duckdb.execute("SELECT max(event_time) FROM read_parquet($p)", {"p": str(events)}).fetchall()
    cutoff = last - timedelta(days=LABEL_DAYS)
    score_on_duckdb(events, EventColumns(), exported, folder / "features.parquet", cutoff)
    table = pq.read_table(folder / "features.parquet").to_pylist()
    features = json.loads((exported.parent / "golden_rows.json").read_text())["features"]
    rows = [{"id": str(row["user_id"]), **{name: row[name] for name in features}} for row in table]
    return events, cutoff, rows


def _log_lines(log: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"the request log did not reach {count} lines")


def test_outcomes_of_the_answers_a_real_server_gave(exported: Path, tmp_path: Path) -> None:
    events, cutoff, rows = _period(tmp_path, exported, users=600, seed=23)
    port, log = free_port(), tmp_path / "requests.jsonl"
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    answers: list[dict[str, Any]] = []
    with run_server(command, port, tmp_path / "server.log", {"PULSE_REQUEST_LOG": str(log)}) as server:
        for start in range(0, len(rows), 100):
            status, body = http_post_json(server.url + "/predict", json.dumps(rows[start : start + 100]).encode())
            assert status == 200
            answers += json.loads(body)
        _log_lines(log, len(rows))
    assert [a["id"] for a in answers] == [r["id"] for r in rows]  # every answer carries its row's id

    out = tmp_path / "outcomes"
    result = subprocess.run(
        [
            *python_command("-m", "score", "outcomes", "--served", str(log), "--events", str(events)),
            *["--as-of", cutoff.isoformat(), "--label-days", str(LABEL_DAYS), "--out", str(out)],
            *["--model", str(exported)],
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode in (0, 1), result.stderr
    figures = json.loads((out / "outcomes.json").read_text())
    (version,) = figures["versions"]
    reported = figures["versions"][version]

    # The same figure computed directly: churned = no event in the 30 days after the cutoff.
    back = {
        str(user)
        for (user,) in duckdb.execute(
            "SELECT DISTINCT user_id FROM read_parquet($p) WHERE event_time > $c AND event_time <= $e",
            {"p": str(events), "c": cutoff, "e": cutoff + timedelta(days=LABEL_DAYS)},
        ).fetchall()
    }
    churned = np.array([a["id"] not in back for a in answers])
    probability = np.array([a["churn_probability"] for a in answers])
    assert reported["users"] == len(answers)
    assert reported["realized"]["roc_auc"] == pytest.approx(roc_auc_score(churned, probability), abs=1e-12)
    assert reported["churn_rate"] == pytest.approx(churned.mean())
    # Judged against the model card given with --model: its own test figures, carried in the model's metadata.
    assert reported["test"]["roc_auc"] == load_model(exported).info.test_metrics["roc_auc"]


def _shadowed_bodies(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    plain = [{k: v for k, v in row.items() if k != "id"} for row in rows]
    columns = {name: [row[name] for row in plain[:5]] for name in plain[0]}
    bodies = [("/predict", json.dumps(row).encode()) for row in rows[:20]]
    bodies += [("/predict", json.dumps(rows[i : i + 7]).encode()) for i in range(0, 70, 7)]
    bodies += [("/predict", json.dumps(columns).encode()), ("/predict?explain=2", json.dumps(rows[0]).encode())]
    return bodies


def test_answers_are_byte_identical_with_a_shadow_under_load(exported: Path, twin_model: Path, tmp_path: Path) -> None:
    # Byte identity across two servers whose turns coalesce differently holds with one onnxruntime thread per worker
    # (the default both servers run with): with more, a forest's sums may differ in the last bit by batch size.
    require_tool("wrk", "apt-get install wrk")
    _, _, rows = _period(tmp_path, exported, users=300, seed=24)
    plain_port, shadow_port = free_port(), free_port()
    shadow_env = {
        "PULSE_SHADOW_MODEL": str(twin_model),
        "PULSE_SHADOW_SAMPLE": "1",
        "PULSE_REQUEST_LOG": str(tmp_path / "requests.jsonl"),
    }
    plain_command = python_command("-m", "server", "--model", str(exported), "--port", str(plain_port))
    shadow_command = python_command("-m", "server", "--model", str(exported), "--port", str(shadow_port))
    with (
        run_server(plain_command, plain_port, tmp_path / "plain.log") as plain,
        run_server(shadow_command, shadow_port, tmp_path / "shadow.log", shadow_env) as shadowed,
    ):
        load = [json.dumps(rows[i : i + 50]).encode() for i in range(0, 200, 50)]
        wrk = threading.Thread(target=run_wrk, args=(shadowed.url, "/predict", load, 4, tmp_path), daemon=True)
        wrk.start()
        time.sleep(0.5)  # wrk's connections are busy before the comparison starts
        compared = 0
        while wrk.is_alive():
            for path, body in _shadowed_bodies(rows):
                expected = http_post_json(plain.url + path, body)
                assert http_post_json(shadowed.url + path, body) == expected, (path, body[:80])
                compared += 1
        wrk.join()
        metrics = http_get(shadowed.url + "/metrics")[1].decode()
    assert compared >= len(_shadowed_bodies(rows))
    shadow_rows = float(re.search(r"^pulse_shadow_rows_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert shadow_rows > 1000  # the shadow scored the load as it ran
    assert re.search(r"^pulse_shadow_errors_total 0.0$", metrics, re.M)


@pytest.mark.parametrize(("name", "shift"), [("unshifted", {}), ("covariate shift", {"engagement_shift": -0.5})])
def test_performance_estimated_before_labels_meets_the_labels(
    exported: Path, name: str, shift: dict[str, float]
) -> None:
    # A small period and the test suite's small model: within 0.05 here. The full-size figures (default model,
    # 5,000 users) are `python -m benchmarks estimate`'s, in the README.
    with tempfile.TemporaryDirectory() as folder:
        result = estimate_period(exported, Path(folder), users=2000, seed=31, **shift)
    # The estimate made before any label, within 0.05 of what the labels realized (a constant 0.5 or 1 would not be).
    assert abs(result["estimated_roc_auc"] - result["realized_roc_auc"]) < 0.05, result


def _oversized_head(url: str) -> None:
    request = urllib.request.Request(url + "/health", headers={"X-Padding": "a" * 40_000})
    try:
        urllib.request.urlopen(request, timeout=5).close()
    except (urllib.error.HTTPError, OSError):
        pass  # refused, as it should be


def _query(api: str, expr: str) -> list[Any]:
    url = f"{api}/query?query={urllib.parse.quote(expr)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        document = json.loads(response.read())
    assert document["status"] == "success", (expr, document)
    return list(document["data"]["result"])


def test_every_dashboard_query_has_data_in_a_real_prometheus(exported: Path, twin_model: Path, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    assert len(targets) >= 20 and all(panel["gridPos"] for panel in dashboard["panels"])
    _, _, rows = _period(tmp_path, exported, users=300, seed=25)
    port = free_port()
    env = {
        "PULSE_SHADOW_MODEL": str(twin_model),
        "PULSE_SHADOW_SAMPLE": "0.5",
        "PULSE_REQUEST_LOG": str(tmp_path / "requests.jsonl"),
        "PULSE_DRIFT_MIN_ROWS": "10",
        "PULSE_MAX_BODY_BYTES": "100000",
        "OTEL_TRACES_EXPORTER": "console",  # the tracing panels' figures (spans to the server's log)
        "OTEL_TRACES_SAMPLER_ARG": "0.05",
    }
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port))
    with run_server(command, port, tmp_path / "server.log", env) as server:
        stop = threading.Event()

        def traffic() -> None:  # rows, batches, a body over the limit (413) and a head over it (refused: 431)
            i = 0
            while not stop.is_set():
                http_post_json(server.url + "/predict", json.dumps(rows[i % len(rows)]).encode())
                http_post_json(server.url + "/predict", json.dumps(rows[:40]).encode())
                if i % 20 == 0:
                    http_post_json(server.url + "/predict", b"[" + b" " * 200_000 + b"]")
                    _oversized_head(server.url)
                i += 1
                time.sleep(0.01)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        with running_prometheus(port, tmp_path) as (api, process):
            deadline = time.monotonic() + 60
            empty: list[str] = [expr for _, expr in targets]
            try:
                while empty:
                    assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                    assert time.monotonic() < deadline, f"dashboard queries with no data after 60 s: {empty}"
                    time.sleep(1)
                    try:
                        empty = [
                            expr for _, expr in targets if not _query(api, expr.replace("$__rate_interval", "10s"))
                        ]
                    except OSError:
                        continue  # Prometheus still starting
                rules = json.loads(urllib.request.urlopen(api + "/rules", timeout=5).read())["data"]["groups"]
                names = {rule["name"] for group in rules for rule in group["rules"]}
                assert "PulseEstimatedRocAucDrop" in names
            finally:
                stop.set()


def _admin(url: str, method: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def test_a_shadow_set_over_http_reaches_every_worker(
    exported: Path, twin_model: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from server.config.keys import hash_key

    admin = "ak-shadow-" + "a" * 32
    (tmp_path / "keys.txt").write_text(f"{hash_key(admin)} admin ops\n")
    port = free_port()
    command = python_command("-m", "server", "--model", str(exported), "--port", str(port), "--workers", "2")
    env = {
        "PULSE_API_KEYS_FILE": str(tmp_path / "keys.txt"),
        "PULSE_MODEL_DIR": str(tmp_path_factory.getbasetemp()),  # every model fixture of this run lives under it
        "PULSE_LOG_LEVEL": "warning",
    }
    rows = json.loads((exported.parent / "golden_rows.json").read_text())
    body = json.dumps([dict(zip(rows["features"], row, strict=True)) for row in rows["inputs"]]).encode()
    with run_server(command, port, tmp_path / "server.log", env, timeout=60) as server:
        deadline = time.monotonic() + 30
        scrape = {"authorization": f"Bearer {admin}"}  # /metrics needs a metrics (or admin) key with keys on
        while "pulse_workers 2.0" not in http_get(server.url + "/metrics", headers=scrape)[1].decode():
            assert time.monotonic() < deadline, "the second worker did not report within 30 s"
            time.sleep(0.2)
        status, answer = _admin(server.url + "/admin/shadow", "POST", admin, {"path": str(twin_model), "sample": 1})
        assert status == 200, answer
        assert len(answer["workers"]) == 2 and set(answer["workers"].values()) == {answer["shadow_version"]}
        request = urllib.request.Request(
            server.url + "/predict", body, {"content-type": "application/json", "authorization": f"Bearer {admin}"}
        )
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            urllib.request.urlopen(request, timeout=10).read()
        deadline = time.monotonic() + 10
        while True:
            metrics = http_get(server.url + "/metrics", headers=scrape)[1].decode()
            found = re.search(r"^pulse_shadow_rows_total (\S+)$", metrics, re.M)
            if (found and float(found.group(1)) == 40 * len(rows["inputs"])) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found and float(found.group(1)) == 40 * len(rows["inputs"])  # every row, whichever worker took it
        assert len(re.findall(r"^pulse_worker_http_requests_total\{", metrics, re.M)) == 2
        status, answer = _admin(server.url + "/admin/shadow", "DELETE", admin)
        assert status == 200 and set(answer["workers"].values()) == {""}
