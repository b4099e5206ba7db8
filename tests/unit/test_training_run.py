"""The whole training run: artifacts and keys, determinism, and a test set that is touched once."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pandas as pd
import pytest

import train.fit
import train.pipeline
from common.features import FEATURE_SETS
from tests.support import train_config, use_small_grid
from train.__main__ import main
from train.pipeline import PLOTS, run_training


def test_artifacts_and_metrics_keys(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in (
        "threshold",
        "threshold_source",
        "test",
        "baseline_logreg",
        "n_train",
        "n_test",
        "churn_rate",
        "params",
        "node_count",
        "model_version",
        "trained_at",
        "features",
    ):
        assert key in metrics, key
    assert metrics["threshold_source"] == "validation"
    assert metrics["features"] == list(FEATURE_SETS["seed"]) and metrics["feature_set"] == "seed"
    assert [f["name"] for f in metrics["feature_schema"]] == metrics["features"]
    for key in ("pr_auc_retained", "everyone_churns_f1", "predicted_churn_share", "retained_recall"):
        assert key in metrics["test"], key
    assert metrics["timestamps_are_dates"] is False
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "brier", "calibration_error", "confusion_matrix"):
        assert key in metrics["test"], key
    (tn, fp), (fn, tp) = metrics["test"]["confusion_matrix"]
    assert tn + fp + fn + tp == metrics["n_test"]
    assert 0.6 < metrics["test"]["roc_auc"] < 0.97  # useful, not trivial
    model = joblib.load(trained / "model.joblib")
    assert sum(t.tree_.node_count for t in model.estimators_) == metrics["node_count"]
    table = pd.read_parquet(trained / "features.parquet")
    assert set(table["split"]) == {"train", "test"}
    assert (table["split"] == "test").sum() == metrics["n_test"]
    assets = trained / "report"
    for name in PLOTS.values():
        assert (assets / name).stat().st_size > 1000, name
    card = (assets / "model_card.md").read_text()
    assert all(name in card for name in PLOTS.values())


def test_threshold_is_tuned_on_training_rows_only(
    event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[pd.Index] = []
    real_tune = train.fit.tune_threshold

    def spy(y_true: pd.Series, y_proba: object) -> train.fit.ThresholdChoice:
        seen.append(y_true.index)
        return real_tune(y_true, y_proba)  # type: ignore[arg-type]

    monkeypatch.setattr(train.fit, "tune_threshold", spy)
    use_small_grid(monkeypatch)
    run_training(train_config(event_log, tmp_path))
    table = pd.read_parquet(tmp_path / "artifacts" / "features.parquet")
    test_rows = set(table.index[table["split"] == "test"])
    assert len(seen) == 1
    assert len(seen[0]) == (table["split"] == "train").sum()
    assert not test_rows & set(seen[0])


def test_same_seed_gives_the_same_model(event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_small_grid(monkeypatch, n_estimators=[10, 20])
    runs = [run_training(train_config(event_log, tmp_path / name, seed=5)) for name in ("a", "b")]
    for key in ("threshold", "params", "node_count", "test", "cv_results"):
        assert runs[0][key] == runs[1][key], key


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        ("user_id,event_time\n", [], "is empty"),
        ("user_id,event_time,revenue\nu,2026-01-01,abc\n", ["--revenue-col", "revenue"], "must be numeric"),
        ("user_id,event_time,revenue\nu,2026-01-01,-1\n", ["--revenue-col", "revenue"], "negative"),
        ("user_id,event_time\nu,2026-01-01\nu,soon\n", [], "unparseable"),
        ("user_id,event_time\nu,2026-01-01\n", ["--user-col", "customer"], "missing column 'customer'"),
        ("user_id,event_time\nu,2026-01-01\nu,2026-03-01\n", ["--cutoff", "2025-06-01"], "before the first event"),
        ("user_id,event_time\nu,2026-01-01\nv,2026-01-02\nu,2026-03-01\nv,2026-03-01\n", [], "single class"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], csv: str, extra: list[str], message: str
) -> None:
    log = tmp_path / "events.csv"
    log.write_text(csv)
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "metrics.json").write_text("previous run")
    code = main(["fit", "--events", str(log), "--out", str(out), "--assets", str(tmp_path / "assets"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "previous run"
    assert not (tmp_path / "assets").exists()


def test_cli_reports_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--events", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failure_in_the_last_step_writes_nothing_at_all(
    event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHAP is the last step that can fail: then no model, metrics, features, plot or card is written."""
    use_small_grid(monkeypatch)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shap failed")

    monkeypatch.setattr(train.pipeline, "shap_summary", boom)
    report = tmp_path / "report"
    with pytest.raises(RuntimeError):
        run_training(train_config(event_log, tmp_path, assets=report))
    assert not (tmp_path / "artifacts").exists()
    assert not report.exists()


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_fit_from_another_directory_writes_only_under_out(
    event_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report defaults to <out>/report: a run changes nothing in the working directory (a repo's assets/)."""
    use_small_grid(monkeypatch)
    workdir = tmp_path / "somewhere"
    (workdir / "assets").mkdir(parents=True)
    (workdir / "assets" / "model_card.md").write_text("committed card")
    monkeypatch.chdir(workdir)
    before = _snapshot(tmp_path)
    out = tmp_path / "out"
    code = main(["fit", "--events", str(event_log), "--out", str(out), "--session-col", "session_id", "--seed", "3"])
    assert code == 0
    after = _snapshot(tmp_path)
    changed = {name for name in after if before.get(name) != after[name]} | (set(before) - set(after))
    assert changed and all(name.startswith("out/") for name in changed), changed
    assert {name.removeprefix("out/report/") for name in changed if name.startswith("out/report/")} >= {
        *PLOTS.values(),
        "model_card.md",
    }
