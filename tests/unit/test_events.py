"""Every bad event log ends in one ValueError naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.events import EventColumns, open_event_log

HEADER = "user_id,event_time,session_id,revenue\n"


def _write(tmp_path: Path, text: str, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# Every engine's loader refuses these with these words (tests/e2e/test_spark_parity.py runs them on Spark).
BAD_LOGS = [
    (HEADER + "a,2026-01-01 10:00:00,s1,1.0\n", EventColumns(user="customer"), "missing column 'customer'"),
    ("user,when\na,2026-01-01\n", EventColumns(), "missing column 'user_id'"),
    (HEADER, EventColumns(), "is empty"),
    (HEADER + "a,2026-01-01 10:00:00,s1,ten\n", EventColumns(), "'revenue' must be numeric"),
    (HEADER + "a,2026-01-01 10:00:00,s1,-3.5\n", EventColumns(), "'revenue' has 1 negative values"),
    (
        HEADER + "a,2026-01-01 10:00:00,s1,1\na,yesterday,s1,1\n",
        EventColumns(),
        "'event_time' has 1 unparseable or empty timestamps, e.g. 'yesterday'",
    ),
    (
        HEADER + "a,2026-01-01 10:00:00,s1,1\n,2026-01-01 11:00:00,s1,1\n",
        EventColumns(),
        "'user_id' has 1 empty user ids",
    ),
    (
        HEADER + "a,2026-01-01 10:00:00,s1,1\na,2026-01-01 11:00:00,,1\n",
        EventColumns(),
        "'session_id' has 1 empty session ids; leave out --session-col",
    ),
]


@pytest.mark.parametrize(("text", "columns", "message"), BAD_LOGS)
def test_bad_event_logs_name_the_problem(tmp_path: Path, text: str, columns: EventColumns, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_event_log(_write(tmp_path, text), columns)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        open_event_log(tmp_path / "nope.parquet", EventColumns())


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "this is not parquet", "events.parquet")
    with pytest.raises(ValueError, match="cannot read event log"):
        open_event_log(path, EventColumns())


def test_unknown_format_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        open_event_log(_write(tmp_path, "x", "events.xlsx"), EventColumns())


def test_glob_matching_nothing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="matches no file"):
        open_event_log(tmp_path / "*.parquet", EventColumns())
