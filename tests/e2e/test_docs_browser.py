"""/docs in a real headless Chromium: renders from the server alone and sends a prediction from the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.procs import ServerProcess, free_port, http_get, python_command, run_server

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    with run_server(
        python_command("-m", "server", "--model", str(exported), "--port", str(port)),
        port,
        tmp_path_factory.mktemp("docs") / "server.log",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def chromium_path() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def test_docs_render_offline_and_send_a_prediction(server: ServerProcess, chromium_path: str) -> None:
    from playwright.sync_api import Route, sync_playwright

    local = server.url + "/"
    requested: list[str] = []
    blocked: list[str] = []

    def only_local(route: Route) -> None:
        url = route.request.url
        if url.startswith(local) or url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ],
        )
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.route("**/*", only_local)
        page.goto(server.url + "/docs", wait_until="networkidle")
        operation = page.locator("#operations-default-predict")
        operation.wait_for(timeout=15_000)
        assert "/predict" in operation.inner_text()
        operation.locator(".opblock-summary").click()
        page.locator("button.execute").click()
        response = page.locator(".live-responses-table tr.response .response-col_status").first
        response.wait_for(timeout=15_000)
        status = response.inner_text().strip()
        body = page.locator(".live-responses-table .microlight").first.inner_text()
        page.screenshot(path=str(server.log_path.parent / "docs.png"), full_page=False)
        browser.close()

    assert status == "200", body
    assert "churn_probability" in body
    assert blocked == [] and all(url.startswith(local) or url.startswith("data:") for url in requested), requested
    metrics = http_get(server.url + "/metrics")[1].decode()
    assert 'pulse_http_requests_total{route="/predict",status="200"}' in metrics
