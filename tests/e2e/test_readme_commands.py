"""The README's commands on a fresh clone: the main job, the drift check, batch scoring with its outcome report and
the benchmark smoke run all work, write their output to ignored folders, and leave ``git status`` clean (committed
examples change only through ``make assets``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.procs import free_port, http_post_json, run_server
from tests.support import BEHAVIOUR_ROW, require_tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parents[1]


def workflow_blocks(readme: str) -> list[str]:
    """The bash blocks of the README's "Three workflows, end to end" section."""
    section = readme.split("## Three workflows, end to end", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.S)


def _shown(block: str) -> str:
    """The start of the last line the block shows as its output (``# DEGRADED: ...``), up to the first figure."""
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")][-1]
    return shown.split(":", 1)[0] + ":"


def curl_examples(readme: str) -> list[tuple[str, str]]:
    """Each ``curl`` command of the README's bash blocks, and the output it shows: the ``# `` lines right after it."""
    examples: list[tuple[str, str]] = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        command: list[str] = []
        shown: list[str] = []
        for line in [*block.splitlines(), ""]:
            if line.startswith("curl "):
                command, shown = [line], []
            elif command and not shown and line and not line.startswith("# "):
                command.append(line)  # the command's continuation
            elif command and line.startswith("# "):
                shown.append(line[2:])
            elif command:
                examples.append(("\n".join(command), "".join(shown)))
                command, shown = [], []
    return examples


def python_examples(readme: str) -> list[tuple[str, list[str]]]:
    """The README's python blocks that show their output: the code, and the ``# `` lines it ends with."""
    examples = []
    for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S):
        lines = block.splitlines()
        shown = [line[2:] for line in lines if line.startswith("# ")]
        if shown:
            examples.append(("\n".join(line for line in lines if not line.startswith("# ")), shown))
    return examples


def assert_shown(shown: object, answered: object, where: str) -> None:
    """The answer is what the README shows: the same keys in the same order, the same strings (``"rf-..."`` stands
    for any model version), the same numbers to 1e-6."""
    if isinstance(shown, dict):
        assert isinstance(answered, dict) and list(shown) == list(answered), (where, shown, answered)
        for key in shown:
            assert_shown(shown[key], answered[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(answered, list) and len(shown) == len(answered), (where, shown, answered)
        for i, (mine, theirs) in enumerate(zip(shown, answered, strict=True)):
            assert_shown(mine, theirs, f"{where}[{i}]")
    elif isinstance(shown, str) and shown.endswith("..."):
        assert isinstance(answered, str) and answered.startswith(shown[:-3]), (where, shown, answered)
    elif isinstance(shown, float):
        assert answered == pytest.approx(shown, abs=1e-6), (where, shown, answered)
    else:
        assert type(answered) is type(shown) and answered == shown, (where, shown, answered)


def _run(clone: Path, *command: str, ok: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=900)
    assert result.returncode in ok, (
        f"{command}: exit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    target = tmp_path_factory.mktemp("clone") / "ml-pulsechecker"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    return target


def test_readme_commands_leave_a_clean_clone(clone: Path) -> None:
    require_tool("wrk", "apt-get install wrk")
    # The main job's stages, through the Makefile, on this test run's venv (not reinstalled).
    stamps = [f"-o{VENV}/.installed-run", f"-o{VENV}/.installed-all"]
    _run(clone, "make", *stamps, f"VENV={VENV}", "export")
    python = str(VENV / "bin" / "python")
    port, grpc_port = free_port(), free_port()
    with run_server(
        [
            python,
            "-m",
            "server",
            "--model",
            str(clone / "artifacts/model.onnx"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        port,
        clone.parent / "server.log",
        env={"PULSE_GRPC_PORT": str(grpc_port)},
    ) as server:
        status, body = http_post_json(server.url + "/predict", json.dumps(BEHAVIOUR_ROW).encode())
        assert status == 200 and 0 <= json.loads(body)["churn_probability"] <= 1
        # Every curl example shows its answer, and the default model gives exactly that answer.
        readme = (clone / "README.md").read_text()
        examples = curl_examples(readme)
        assert len(examples) >= 4 and all(shown for _, shown in examples), examples
        for command, shown in examples:
            script = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            answered = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60).stdout
            assert_shown(json.loads(shown), json.loads(answered), command.splitlines()[0])
        # The ecosystem's clients example (tritonclient over HTTP and gRPC) prints what it shows.
        ((code, shown_lines),) = [example for example in python_examples(readme) if "tritonclient" in example[0]]
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("127.0.0.1:8001", f"127.0.0.1:{grpc_port}")
        printed = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        assert printed.stdout.splitlines() == shown_lines, printed.stderr[-2000:]

    # The README's end-to-end workflow blocks, as written (on this run's venv rather than the clone's .venv, and
    # the example server's port swapped for a free one): nightly scoring -> outcomes, request log -> drift,
    # answers with ids -> outcomes of what was served.
    blocks = workflow_blocks((clone / "README.md").read_text())
    assert len(blocks) == 3 and "score outcomes" in blocks[0] and "train drift" in blocks[1]
    assert "--served" in blocks[2]
    for block in blocks:
        script = block.replace(".venv/bin/python", python).replace("8001", str(free_port()))
        result = subprocess.run(["bash", "-c", script], cwd=clone, capture_output=True, text=True, timeout=600)
        assert result.returncode == 1, f"{block}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"  # 1: as shown
        assert _shown(block) in result.stdout, (block, result.stdout[-2000:])
    assert (clone / "artifacts" / "outcomes" / "outcomes.md").is_file()
    assert (clone / "artifacts" / "drift" / "data_drift_report.html").is_file()
    served = json.loads((clone / "artifacts" / "served-outcomes" / "outcomes.json").read_text())
    nightly = json.loads((clone / "artifacts" / "outcomes" / "outcomes.json").read_text())
    (version,) = served["versions"]  # the answers the server gave realize what the nightly run's scores realized
    assert served["versions"][version]["realized"]["roc_auc"] == pytest.approx(nightly["realized"]["roc_auc"], abs=1e-6)

    # The benchmark harness's smoke run with its defaults: every scenario runs and reports.
    _run(clone, python, "-m", "benchmarks", "run", "--smoke")
    results = json.loads((clone / "benchmarks" / "results" / "latest.json").read_text())
    assert set(results["single"]) == {
        "ours",
        "ours_stock",
        "ours_shadow",
        "original",
        "bare_starlette",
        "raw_asgi",
        "python_floor",
    }
    for name, entry in [*results["single"].items(), *results["ours"].items()]:
        assert entry["rps"]["median"] > 0 and entry["errors"] == 0, (name, entry["errors"])
    assert set(results["ours"]) == {
        "/predict?explain=3 [1]",
        "/predict with a 10% shadow [1000]",
        "/predict [10]",
        "/predict [100]",
        "/predict [1000]",
        "/predict columns [1000]",
        "/v2 infer [1]",
        "/v2 infer [1000]",
        "/v2 infer binary [1000]",
        "/v2 infer binary in and out [1000]",
        *(f"{label} stock" for label in ("/predict [1000]", "/predict columns [1000]", "/v2 infer [1000]")),
        "/v2 infer binary [1000] stock",
        "/v2 infer binary in and out [1000] stock",
        "gRPC ModelInfer raw [1]",
        "gRPC ModelInfer raw [1000]",
        "gRPC ModelInfer raw [1] constant",  # the gRPC door's ceiling: grpc.aio answering a constant
        "gRPC ModelInfer raw [1000] constant",
    }
    for runs in results["locust"].values():
        assert runs[0]["requests"] > 0 and runs[0]["failures"] == 0
    assert results["in_process"]["onnx_single_row_us"] > 0
    assert results["in_process"]["explain_rows_per_s_1000"] > 0 and results["in_process"]["shap_rows_per_s_1000"] > 0
    assert "ML-PulseChecker" in (clone / "benchmarks" / "results" / "benchmarks.md").read_text()

    assert (clone / "artifacts" / "report" / "model_card.md").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout
