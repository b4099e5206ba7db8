"""The chaos run's CI size (``python -m benchmarks chaos``, seeded): 3 workers, clients on both HTTP doors, V2 and
gRPC, admin swaps at once, SIGHUP, SIGKILL, forced swaps, scrapes and key reloads at random moments; zero invariant
violations over the whole history. The full size (10 minutes) is ``--full``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_seeded_chaos_run_violates_no_invariant(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "chaos", "--seed", "7", "--seconds", "25", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(run.stdout)
    outcome = json.loads(out.read_text())
    assert run.returncode == 0 and not any(outcome["violations"].values()), outcome.get("examples")
    assert outcome["answers"] > 1000 and outcome["rows_checked"] >= outcome["answers"]
    assert {"swaps", "kill", "force"} <= set(outcome["by_operation"]), outcome["by_operation"]
    assert len(outcome["final_served"]) == 1
    assert outcome["by_kind"]["grpc"] > 100  # the gRPC door was under the same faults, by the same invariants
