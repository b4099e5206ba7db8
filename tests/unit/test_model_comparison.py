"""The baseline comparison and the feature ablation run end to end on a small simulated log."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import ablation, models
from common.events import EventColumns

COLUMNS = EventColumns(session="session_id", revenue="revenue")


@pytest.fixture(scope="module")
def labelled(event_log: Path) -> models.LabelledLog:
    return models.load_labelled(event_log, COLUMNS, None, 30)


def test_every_baseline_is_scored_on_the_same_test_users(labelled: models.LabelledLog) -> None:
    result = models.compare(labelled, seed=3, grid=models.SMALL_GRID)
    y, scores = result.pop("_scores")
    assert set(result["models"]) == {
        models.SERVED,
        "forest · seed",
        "logistic regression · seed",
        "logistic regression · behaviour",
        "gradient boosting · behaviour",
        "BG/NBD",
    }
    assert all(len(p) == len(y) == result["n_test"] for p in scores.values())
    for name, figures in result["models"].items():
        assert 0.5 < figures["roc_auc"] <= 1 and 0 <= figures["brier"] <= 1 and 0 <= figures["calibration_error"] <= 1
        if name != models.SERVED:
            low, high = figures["roc_auc_minus_served_95"]
            assert low <= figures["roc_auc_minus_served"] <= high, name
    # Recency is what the simulated users' drift shows: the served forest beats the one without it.
    assert result["models"][models.SERVED]["roc_auc"] > result["models"]["forest · seed"]["roc_auc"] + 0.02
    assert result["bgnbd_params"]["r"] > 0
    markdown = models.render_markdown(result, "tiny")
    assert markdown.count("\n| ") == len(result["models"]) + 1 and "(served)" in markdown


def test_the_cli_writes_markdown_json_and_a_plot(event_log: Path, tmp_path: Path) -> None:
    args = argparse.Namespace(
        events=str(event_log),
        label_days=30,
        cutoff=None,
        session_col="session_id",
        revenue_col="revenue",
        seed=3,
        grid="small",
        out=tmp_path,
    )
    assert models.main(args) == 0
    assert json.loads((tmp_path / "models.json").read_text())["label_days"] == 30
    assert (tmp_path / "models.png").stat().st_size > 1000 and "BG/NBD" in (tmp_path / "models.md").read_text()


def test_ablation_adds_features_in_the_declared_order(labelled: models.LabelledLog, event_log: Path) -> None:
    result = ablation.ablate(event_log, COLUMNS, labelled.cutoff, 30, seed=3)
    steps = [row["step"] for row in result["rows"]]
    assert steps[:2] == ["seed", "+ days_since_last_event"]
    assert steps[2] == "behaviour + days_since_first_event"
    assert result["rows"][0]["gain"] is None
    assert all(0.5 < row["cv_roc_auc"] <= 1 for row in result["rows"])
    assert result["rows"][1]["gain"] == pytest.approx(result["rows"][1]["cv_roc_auc"] - result["rows"][0]["cv_roc_auc"])
