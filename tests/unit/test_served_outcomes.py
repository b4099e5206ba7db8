"""``score outcomes --served``: logged answers joined by id to a later log, on numbers checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.events import EventColumns
from score.__main__ import main
from score.model import ScoreError
from score.served import report_served_outcomes

COLUMNS = EventColumns(session=None, revenue=None)
AT = "2026-03-01T00:00:00.000Z"


def _line(
    ident: object, p: float, ts: str = AT, shadow: float | None = None, version: str = "v1", candidate: str = "v2"
) -> str:
    record = {"ts": ts, "id": ident, "f": 1.0, "churn_probability": p, "churn": p >= 0.5, "threshold": 0.5}
    record["model_version"] = version
    if shadow is not None:
        record |= {"shadow_probability": shadow, "shadow_model_version": candidate}
    return json.dumps(record)


@pytest.fixture
def period(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "requests.jsonl"
    rotated = tmp_path / "requests.20260301T000000000Z.jsonl"
    # u1 answered twice: its latest answer (0.9) counts. A line without an id cannot be joined and is left out.
    rotated.write_text(_line("u1", 0.2, "2026-02-28T23:00:00.000Z") + "\n")
    log.write_text(
        "\n".join(
            [
                _line("u1", 0.9, shadow=0.7),
                _line("u2", 0.8, shadow=0.2),
                _line("u3", 0.3, shadow=0.8),
                _line("u4", 0.6, shadow=0.9),
                _line("u5", 0.1, shadow=0.1),
                json.dumps({"ts": AT, "f": 1.0, "churn_probability": 0.5, "threshold": 0.5, "model_version": "v1"}),
            ]
        )
        + "\n"
    )
    events = tmp_path / "later.csv"
    # Everyone was active before; u2 and u5 come back within 30 days of the answer; the log runs past the window.
    events.write_text(
        "user_id,event_time\n"
        + "".join(f"u{i},2026-02-20T10:00:00\n" for i in range(1, 6))
        + "u2,2026-03-10T10:00:00\nu5,2026-03-10T10:00:00\nu5,2026-04-05T10:00:00\n"
    )
    return tmp_path, events


def test_realized_figures_of_the_answers_given(period: tuple[Path, Path], tmp_path: Path) -> None:
    folder, events = period
    report = report_served_outcomes(str(folder / "requests*.jsonl"), events, COLUMNS, 30, 0.05, tmp_path / "out")
    v1 = report.figures["versions"]["v1"]
    # Churned: u1, u3, u4 (0.9, 0.3, 0.6); came back: u2, u5 (0.8, 0.1). Of the 6 churner-stayer pairs the churner
    # scores higher in 4: (0.9, 0.8), (0.9, 0.1), (0.3, 0.1), (0.6, 0.1). ROC-AUC 4/6.
    assert v1["users"] == 5 and v1["churn_rate"] == pytest.approx(3 / 5)
    assert v1["realized"]["roc_auc"] == pytest.approx(4 / 6)
    # Flagged at 0.5: u1, u2, u4, of whom u1 and u4 churned; the churners flagged: u1, u4 of three.
    assert v1["realized"]["precision"] == pytest.approx(2 / 3) and v1["realized"]["recall"] == pytest.approx(2 / 3)
    assert v1["realized"]["confusion_matrix"] == [[1, 1], [1, 2]]
    # The shadow on the same users: churners 0.7, 0.8, 0.9 against stayers 0.2, 0.1: every pair ordered right.
    (shadow,) = report.figures["shadows"]
    assert shadow["users"] == 5 and shadow["shadow_version"] == "v2" and shadow["served_version"] == "v1"
    assert shadow["shadow"]["roc_auc"] == 1.0 and shadow["served"]["roc_auc"] == pytest.approx(4 / 6)
    assert (tmp_path / "out" / "outcomes.md").read_text().count("| shadow |") == 1
    assert (tmp_path / "out" / "reliability.png").read_bytes().startswith(b"\x89PNG")


def test_the_command_reports_and_says_what_is_wrong(
    period: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, events = period
    args = ["outcomes", "--served", str(folder / "requests.jsonl"), "--events", str(events), "--out", str(tmp_path)]
    assert main(args) == 0
    assert "ok: v1 realized ROC-AUC 0.667 on 5 users" in capsys.readouterr().out
    short = tmp_path / "short.csv"
    short.write_text("user_id,event_time\nu1,2026-02-20T10:00:00\nu1,2026-03-05T10:00:00\n")
    assert main([*args[:3], "--events", str(short), "--out", str(tmp_path)]) == 2
    assert "does not cover" in capsys.readouterr().err
    with pytest.raises(ScoreError, match="matches no file"):
        report_served_outcomes(str(folder / "nothing*.jsonl"), events, COLUMNS, 30, 0.05, tmp_path)
    no_ids = folder / "anonymous.jsonl"
    no_ids.write_text(json.dumps({"ts": AT, "churn_probability": 0.5, "threshold": 0.5, "model_version": "v1"}) + "\n")
    with pytest.raises(ScoreError, match="send an 'id'"):
        report_served_outcomes(str(no_ids), events, COLUMNS, 30, 0.05, tmp_path)


def test_bad_settings_are_one_line_each(period: tuple[Path, Path], tmp_path: Path) -> None:
    folder, events = period
    log = str(folder / "requests.jsonl")
    with pytest.raises(ScoreError, match="--tolerance must be between 0 and 1"):
        report_served_outcomes(log, events, COLUMNS, 30, 2.0, tmp_path)
    with pytest.raises(ScoreError, match="--label-days must be at least 1"):
        report_served_outcomes(log, events, COLUMNS, -3, 0.05, tmp_path)


def test_integer_ids_then_string_ids_read_as_one_column(tmp_path: Path) -> None:
    """Review M6: a log whose first ~20k ids are integers and a later one a string failed the whole report."""
    from score.served import read_answers

    log = tmp_path / "requests.jsonl"
    log.write_text("\n".join([*(_line(i, 0.5) for i in range(30_000)), _line("user-abc", 0.7)]) + "\n")
    con = read_answers(str(log))
    assert con.execute("SELECT count(*) FROM answers").fetchone() == (30_001,)
    found = con.execute("SELECT user_id, churn_probability FROM answers WHERE user_id IN ('user-abc', '29999')")
    assert sorted(found.fetchall()) == [("29999", 0.5), ("user-abc", 0.7)]


def test_each_shadow_candidate_is_judged_on_its_own_rows(period: tuple[Path, Path], tmp_path: Path) -> None:
    """Review M5: users 1-4 shadowed by s1 (right) and 5-8 by s2 (inverted) were pooled: s1 0.5."""
    _, events = period
    log = tmp_path / "requests.jsonl"
    # u1, u3, u4 churned; u2, u5 came back (the period's later log). s1 orders them right, s2 wrongly.
    right = {"u1": 0.9, "u2": 0.1, "u3": 0.8, "u4": 0.7, "u5": 0.2}
    lines = [_line(user, 0.5, shadow=p, candidate="s1") for user, p in right.items()]
    lines += [_line(user, 0.5, shadow=1 - p, version="v9", candidate="s2") for user, p in right.items()]
    log.write_text("\n".join(lines) + "\n")
    report = report_served_outcomes(str(log), events, COLUMNS, 30, 0.05, tmp_path / "out")
    by_candidate = {s["shadow_version"]: s for s in report.figures["shadows"]}
    assert by_candidate["s1"]["served_version"] == "v1" and by_candidate["s2"]["served_version"] == "v9"
    assert by_candidate["s1"]["shadow"]["roc_auc"] == 1.0 and by_candidate["s2"]["shadow"]["roc_auc"] == 0.0
    assert by_candidate["s1"]["users"] == by_candidate["s2"]["users"] == 5
