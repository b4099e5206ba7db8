"""A shadow model set and removed through the admin route, in-process: checked like a served model, scored after the
answers (which it never changes), compared in /metrics and in the request log."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from common.model.loader import load_model
from server.config.keys import hash_key
from server.config.settings import Settings
from server.http.app import PulseApp, create_app

pytestmark = pytest.mark.http

ADMIN_KEY, PREDICT_KEY = "pk_admin_shadow", "pk_predict_shadow"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PREDICT = {"authorization": f"Bearer {PREDICT_KEY}"}


@pytest.fixture
def keyed(exported: Path, tmp_path: Path) -> Iterator[tuple[PulseApp, TestClient, Path]]:
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(PREDICT_KEY)} predict crm\n{hash_key(ADMIN_KEY)} admin ops\n")
    log = tmp_path / "requests.jsonl"
    settings = Settings(
        model_path=exported, api_keys_file=keys, model_dir=tmp_path.parent, request_log=log, drift_min_rows=1
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client.app, client, log  # type: ignore[misc]


def _rows(exported: Path) -> list[dict[str, float]]:
    golden = json.loads((exported.parent / "golden_rows.json").read_text())
    return [dict(zip(golden["features"], row, strict=True)) for row in golden["inputs"]]


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def _settled(client: TestClient, rows: int) -> str:
    deadline = time.monotonic() + 5
    while True:
        text = client.get("/metrics", headers=ADMIN).text
        if (_metric(text, "pulse_shadow_rows_total") or 0) >= rows or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def test_a_shadow_scores_after_the_answers_and_is_compared(
    keyed: tuple[PulseApp, TestClient, Path], exported: Path, twin_model: Path
) -> None:
    app, client, log = keyed
    rows = _rows(exported)
    before = [client.post("/predict", json=rows, headers=PREDICT).content for _ in range(3)]
    assert client.post("/admin/shadow", json={"path": str(twin_model)}, headers=PREDICT).status_code == 403
    answer = client.post("/admin/shadow", json={"path": str(twin_model), "sample": 1.0}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    twin = load_model(twin_model)
    assert answer.json()["shadow_version"] == twin.info.version and answer.json()["sample"] == 1.0
    after = [client.post("/predict", json=rows, headers=PREDICT).content for _ in range(3)]
    assert after == before  # the answers are the served model's, byte for byte

    text = _settled(client, 3 * len(rows))
    assert _metric(text, "pulse_shadow_rows_total") == 3 * len(rows)
    served = load_model(exported)
    X = np.array([[row[name] for name in served.info.features] for row in rows], dtype=np.float32)
    p_served, p_twin = served.churn_probability(X), twin.churn_probability(X)
    t = served.info.threshold
    assert _metric(text, "pulse_shadow_agreement") == pytest.approx(np.mean((p_served >= t) == (p_twin >= t)))
    assert _metric(text, "pulse_shadow_mean_abs_diff") == pytest.approx(np.mean(np.abs(p_twin - p_served)), rel=1e-5)
    assert f'pulse_shadow_info{{sha256="{twin.info.sha256}",version="{twin.info.version}"}} 1.0' in text
    assert (_metric(text, "pulse_shadow_compute_seconds_count") or 0) == 3

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    shadowed = [line for line in lines if "shadow_probability" in line]
    assert len(shadowed) == 3 * len(rows)
    assert {line["shadow_model_version"] for line in shadowed} == {twin.info.version}
    assert [line["shadow_probability"] for line in shadowed[: len(rows)]] == pytest.approx(p_twin.tolist())

    off = client.delete("/admin/shadow", headers=ADMIN)
    assert off.status_code == 200 and off.json()["shadow_version"] is None
    assert "pulse_shadow_info" not in client.get("/metrics", headers=ADMIN).text


def test_a_candidate_with_other_features_or_outside_the_folder_is_refused(
    keyed: tuple[PulseApp, TestClient, Path], behaviour_model: Path, tmp_path: Path
) -> None:
    _, client, _ = keyed
    refused = client.post("/admin/shadow", json={"path": str(behaviour_model)}, headers=ADMIN)
    assert refused.status_code == 422 and "features" in refused.json()["detail"]
    outside = client.post("/admin/shadow", json={"path": "/etc/passwd"}, headers=ADMIN)
    assert outside.status_code == 422 and "model folder" in outside.json()["detail"]
    for bad in ({"path": str(behaviour_model), "sample": 2}, {"path": 3}, {"path": "x", "other": 1}):
        assert client.post("/admin/shadow", json=bad, headers=ADMIN).status_code == 422
    assert "pulse_shadow_info" not in client.get("/metrics", headers=ADMIN).text


def test_a_wrong_method_on_the_shadow_route_lists_both_of_its_methods(
    keyed: tuple[PulseApp, TestClient, Path],
) -> None:
    # POST and DELETE share the path: a 405's Allow must name both (schemathesis found only POST there once).
    _, client, _ = keyed
    response = client.request("OPTIONS", "/admin/shadow", headers=ADMIN)
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"POST", "DELETE"}


def test_a_forced_swap_to_other_features_removes_the_shadow(
    keyed: tuple[PulseApp, TestClient, Path], twin_model: Path, behaviour_model: Path
) -> None:
    """Review M4: the old shadow went on scoring rows of the new features (permuted or failing)."""
    app, client, _ = keyed
    assert client.post("/admin/shadow", json={"path": str(twin_model), "sample": 1.0}, headers=ADMIN).status_code == 200
    swapped = client.post("/admin/model", json={"path": str(behaviour_model), "force": True}, headers=ADMIN)
    assert swapped.status_code == 200, swapped.text
    assert app.state.request_log is not None and app.state.request_log.shadow is None
    assert "pulse_shadow_info" not in client.get("/metrics", headers=ADMIN).text


def test_a_configured_shadow_that_is_gone_never_stops_a_worker(exported: Path, tmp_path: Path) -> None:
    """Review M3: a restarted worker whose PULSE_SHADOW_MODEL was removed failed its start-up, again and again."""
    settings = Settings(model_path=exported, shadow_model=tmp_path / "gone.onnx")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/ready").status_code == 200
        assert client.post("/predict", json=_rows(exported)[0]).status_code == 200
        assert "pulse_shadow_info" not in client.get("/metrics", headers=ADMIN).text


def test_a_shadow_record_loaded_late_never_overwrites_a_newer_admin_call(
    exported: Path, twin_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review M1: a worker still loading an older record's candidate (A) set it after its own admin call set B, and
    kept A for good while the record and the other workers said B."""
    import time as clock

    import server.ops.swap as swap_module
    from server.ops.control import SHADOW_CONTROL_FILE, write_control

    real = swap_module.load_shadow

    def slow_for_a(path: Path, *args: object) -> object:
        if path == twin_model:
            clock.sleep(0.5)  # in a thread (the swapper loads off the event loop)
        return real(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(swap_module, "load_shadow", slow_for_a)
    keys = tmp_path / "keys"
    keys.write_text(f"{hash_key(ADMIN_KEY)} admin ops\n")
    folder = tmp_path / "metrics"
    folder.mkdir()
    settings = Settings(model_path=exported, api_keys_file=keys, model_dir=tmp_path.parent, metrics_dir=folder)
    app = create_app(settings)
    with TestClient(app) as client:
        swapper = app.state.swapper
        assert swapper is not None and client.portal is not None
        write_control(folder, twin_model, load_model(twin_model).info.sha256, False, 1.0, SHADOW_CONTROL_FILE)

        async def follow_a_then_admin_b() -> str:
            swapper.poll_control()  # starts following the record (A), slowly
            await asyncio.sleep(0.1)
            shadow, _ = await swapper.admin_shadow(exported, "", 1.0)  # B, while A still loads
            await asyncio.sleep(0.8)  # A's load has finished by now
            assert shadow is not None
            return shadow.version

        admin_version = client.portal.call(follow_a_then_admin_b)
        assert app.state.request_log is not None and app.state.request_log.shadow is not None
        assert app.state.request_log.shadow.version == admin_version == load_model(exported).info.version
