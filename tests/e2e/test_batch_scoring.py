"""``python -m score run`` on DuckDB: every user active at the cutoff, the training features, the server's scores.

Bad input (a missing column, bad timestamps, a model that is not ours or whose features this version cannot build)
is one line on stderr, exit 2, and an earlier output left as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest

from common.events import EventColumns, open_event_log
from common.features import build_features, feature_set
from common.model.loader import load_model
from score.duckdb_engine import score_on_duckdb
from score.model import ScoreError
from score.output import RUN_RECORD_KEY

pytestmark = pytest.mark.e2e

LOG_COLUMNS = EventColumns(session="session_id", revenue="revenue")
CUTOFF = "2026-02-20T12:00:00"


def score_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "score", "run", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_every_active_user_is_scored_with_the_training_features_and_the_servers_probability(
    tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    out = tmp_path / "predictions.parquet"
    result = score_cli(
        "--events", str(event_log), "--model", str(behaviour_model), "--cutoff", CUTOFF,
        "--session-col", "session_id", "--revenue-col", "revenue", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"-> {out}" in result.stdout

    table = pq.read_table(out)
    names = [f.name for f in feature_set("behaviour")]
    assert table.column_names == ["user_id", *names, "churn_probability", "churn", "threshold", "model_version",
                                  "cutoff"]  # fmt: skip
    con = open_event_log(event_log, LOG_COLUMNS)
    training_features = build_features(con, datetime.fromisoformat(CUTOFF), False, feature_set("behaviour"))
    (active,) = con.execute(
        "SELECT count(DISTINCT user_id) FROM events WHERE event_time <= $c", {"c": CUTOFF}
    ).fetchall()[0]
    assert table.num_rows == active == len(training_features)
    assert table.column("user_id").to_pylist() == training_features["user_id"].tolist()
    for name in names:
        assert np.array_equal(table.column(name).to_numpy(), training_features[name].to_numpy()), name

    served = load_model(behaviour_model)
    X = training_features[names].to_numpy(np.float32)
    probability = table.column("churn_probability").to_numpy()
    assert np.abs(probability - served.churn_probability(X)).max() <= 1e-6
    assert np.array_equal(table.column("churn").to_numpy(), probability >= served.info.threshold)
    assert set(table.column("model_version").to_pylist()) == {served.info.version}
    assert set(table.column("cutoff").to_pylist()) == {datetime.fromisoformat(CUTOFF)}
    record = json.loads(table.schema.metadata[RUN_RECORD_KEY])
    assert record["model_sha256"] == served.info.sha256 and record["test_metrics"] == served.info.test_metrics


def test_small_chunks_give_the_same_file_as_one_chunk(tmp_path: Path, event_log: Path, behaviour_model: Path) -> None:
    whole = score_on_duckdb(event_log, LOG_COLUMNS, behaviour_model, tmp_path / "whole.parquet", chunk_rows=1 << 20)
    chunked = score_on_duckdb(event_log, LOG_COLUMNS, behaviour_model, tmp_path / "chunked.parquet", chunk_rows=97)
    assert whole.users == chunked.users > 97 * 5
    assert pq.read_table(tmp_path / "whole.parquet").equals(pq.read_table(tmp_path / "chunked.parquet"))
    assert whole.estimate is not None and chunked.estimate == pytest.approx(whole.estimate, abs=1e-12)


def test_without_a_session_column_sessions_come_from_30_minute_gaps(
    tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    out = tmp_path / "sessionized.parquet"
    score_on_duckdb(event_log, EventColumns(session=None, revenue="revenue"), behaviour_model, out)
    con = open_event_log(event_log, EventColumns(session=None, revenue="revenue"))
    (last,) = con.execute("SELECT max(event_time) FROM events").fetchall()[0]
    expected = build_features(con, last, True, feature_set("behaviour"))
    got = pq.read_table(out).column("total_sessions").to_numpy()
    assert np.array_equal(got, expected["total_sessions"].to_numpy())


def _model_with(source: Path, target: Path, **metadata: str) -> Path:
    """A copy of ``source`` with some metadata replaced (keeping the golden rows, so only the change is wrong)."""
    model = onnx.load(source)
    for prop in model.metadata_props:
        if prop.key in metadata:
            prop.value = metadata[prop.key]
    onnx.save(model, target)
    return target


def _schema_with_sql(model: Path, feature: str, sql: str) -> str:
    meta = {p.key: p.value for p in onnx.load(model).metadata_props}
    schema = json.loads(meta["feature_schema"])
    for item in schema:
        if item["name"] == feature:
            item["sql"] = sql
    return json.dumps(schema)


def _bad_csv(path: Path) -> Path:
    path.write_text("user_id,event_time,session_id,revenue\n1,2026-01-02 10:00:00,1,0\n2,yesterday,2,0\n")
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing column", "event log is missing column 'revenue'"),
        ("bad timestamps", "column 'event_time' has 1 unparseable or empty timestamps, e.g. 'yesterday'"),
        ("not onnx", "is not a loadable ONNX model"),
        ("another definition", "model feature 'days_since_last_event' was trained with another SQL definition"),
        ("unknown feature", "model feature 'days_since_signup' is not in this version's feature catalogue"),
        ("cutoff before the log", "cutoff 2020-01-01T00:00:00 is before the log's first event"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_keeps_the_earlier_output(
    tmp_path: Path, event_log: Path, behaviour_model: Path, case: str, message: str
) -> None:
    out = tmp_path / "predictions.parquet"
    out.write_bytes(b"yesterday's predictions")
    events, model, extra = str(event_log), behaviour_model, ["--revenue-col", "revenue"]
    if case == "missing column":
        events = str(tmp_path / "no_revenue.parquet")
        pq.write_table(pq.read_table(event_log).drop(["revenue"]), events)
    elif case == "bad timestamps":
        events = str(_bad_csv(tmp_path / "events.csv"))
    elif case == "not onnx":
        model = tmp_path / "model.onnx"
        model.write_bytes(b"\x08\x07" + b"not a model" * 10)
    elif case == "another definition":
        changed = _schema_with_sql(behaviour_model, "days_since_last_event", "max(age_days)")
        model = _model_with(behaviour_model, tmp_path / "model.onnx", feature_schema=changed)
    elif case == "unknown feature":
        meta = {p.key: p.value for p in onnx.load(behaviour_model).metadata_props}
        renamed = {key: value.replace("days_since_last_event", "days_since_signup") for key, value in meta.items()}
        model = _model_with(behaviour_model, tmp_path / "model.onnx", **renamed)
    else:
        extra += ["--cutoff", "2020-01-01"]
    result = score_cli("--events", events, "--model", str(model), "--out", str(out), *extra)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert out.read_bytes() == b"yesterday's predictions"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_model_from_another_tool_is_refused(tmp_path: Path, event_log: Path) -> None:
    """A valid ONNX classifier without our metadata: refused by name, not scored on guessed features."""
    node = onnx.helper.make_node("Identity", ["input"], ["probabilities"])
    graph = onnx.helper.make_graph(
        [node],
        "foreign",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [None, 2])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 2])],
    )
    foreign = tmp_path / "foreign.onnx"
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this onnxruntime reads
    onnx.save(model, foreign)
    result = score_cli("--events", str(event_log), "--model", str(foreign), "--out", str(tmp_path / "p.parquet"))
    assert result.returncode == 2 and "model metadata lacks 'features'" in result.stderr
    assert not (tmp_path / "p.parquet").exists()


def test_the_scorer_runs_without_any_training_library(tmp_path: Path, event_log: Path, behaviour_model: Path) -> None:
    """Scoring and reporting in a fresh interpreter where scikit-learn, pandas, scipy, shap, evidently and pyspark
    cannot be imported at all (the ``score`` extra installs none of them; pyarrow uses pandas only when present)."""
    blocked = ["sklearn", "pandas", "scipy", "shap", "evidently", "skl2onnx", "pyspark"]
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from score.__main__ import main
predictions = {str(tmp_path / "p.parquet")!r}
rc = main(["run", "--events", {str(event_log)!r}, "--model", {str(behaviour_model)!r}, "--session-col", "session_id",
           "--revenue-col", "revenue", "--cutoff", {CUTOFF!r}, "--out", predictions])
rc += 10 * main(["outcomes", "--predictions", predictions, "--events", {str(event_log)!r}, "--label-days", "10",
                 "--out", {str(tmp_path / "report")!r}])
print("exit", rc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.stdout.strip().splitlines()[-1] in ("exit 0", "exit 10"), result.stderr[-2000:]
    assert (tmp_path / "report" / "outcomes.json").is_file()


def test_explain_adds_each_users_strongest_reasons_from_the_model_graph(
    tmp_path: Path, event_log: Path, behaviour_model: Path
) -> None:
    out = tmp_path / "explained.parquet"
    score_on_duckdb(event_log, LOG_COLUMNS, behaviour_model, out, explain=3)
    table = pq.read_table(out)
    model = load_model(behaviour_model)
    assert model.explainer is not None and model.explains_in_graph
    names = list(model.info.features)
    X = np.column_stack([table.column(name).to_numpy() for name in names]).astype(np.float32)
    contributions = model.explainer.shap_values(X)  # the per-row algorithm: the reference
    strongest = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :3]
    for i in range(3):
        j = strongest[:, i]
        assert table.column(f"reason_{i + 1}").to_pylist() == [names[k] for k in j]
        np.testing.assert_allclose(table.column(f"reason_{i + 1}_value").to_numpy(), X[np.arange(len(X)), j])
        np.testing.assert_allclose(
            table.column(f"reason_{i + 1}_contribution").to_numpy(), contributions[np.arange(len(X)), j], atol=1e-6
        )
    plain = score_on_duckdb(event_log, LOG_COLUMNS, behaviour_model, tmp_path / "plain.parquet")
    assert plain.users == table.num_rows
    np.testing.assert_array_equal(
        pq.read_table(tmp_path / "plain.parquet").column("churn_probability").to_numpy(),
        table.column("churn_probability").to_numpy(),
    )


def test_explain_asks_for_at_most_the_models_features(tmp_path: Path, event_log: Path, behaviour_model: Path) -> None:
    with pytest.raises(ScoreError, match="--explain 9: the model has 6 features"):
        score_on_duckdb(event_log, LOG_COLUMNS, behaviour_model, tmp_path / "x.parquet", explain=9)
    assert not (tmp_path / "x.parquet").exists()
