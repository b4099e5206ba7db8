"""Live drift: reference bins from export, PSI with its smoothing, the sliding window and its merge across workers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from common.model.reference import PREDICTION, Column, DriftReferenceError, read_reference
from export.reference import reference_bins
from server.monitoring.drift import DriftWindow, psi


def test_reference_bins_put_a_tenth_of_the_training_rows_in_each_bin() -> None:
    values = np.arange(1000, dtype=np.float64)
    bins = reference_bins(values)
    assert bins["edges"] == pytest.approx([99, 199, 299, 399, 499, 599, 699, 799, 899], abs=1)  # observed values
    assert bins["shares"] == pytest.approx([0.1] * 10, abs=0.002)


def test_repeated_quantiles_merge_into_one_edge() -> None:
    values = np.array([0.0] * 70 + [1.0] * 20 + [5.0] * 10)  # a count that is mostly zero
    bins = reference_bins(values)  # tenths 1..7 are 0 (no edge at the minimum), tenths 8 and 9 are 1
    assert bins["edges"] == [1.0]
    assert bins["shares"] == pytest.approx([0.7, 0.3])


def test_psi_by_hand_and_its_smoothing() -> None:
    reference = [0.5, 0.5]
    assert psi([500, 500], reference) == pytest.approx(0.0, abs=1e-12)
    # 80/20 against 50/50, with half a row added to each bin of 1000: by the formula
    current = [(800 + 0.5) / 1001, (200 + 0.5) / 1001]
    expected = sum((c - 0.5) * math.log(c / 0.5) for c in current)
    assert psi([800, 200], reference) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([1000, 0], reference))  # an empty bin stays finite
    assert math.isfinite(psi([500, 500], [1.0, 0.0]))  # so does an empty training bin (floored at 1e-4)


def _window(slots: int = 3) -> DriftWindow:
    columns = [Column("x", (1.0, 2.0), (0.25, 0.5, 0.25)), Column(PREDICTION, (0.5,), (0.5, 0.5))]
    return DriftWindow(columns, slots, slot_seconds=60)


def test_rows_land_in_their_bins_one_by_one_and_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.monitoring.drift.time.time", lambda: 600.0)
    one, batch = _window(), _window()
    values = [0.5, 1.0, 1.5, 2.0, 7.0]  # bins: [..1) [1, 2) [2, ..)
    probabilities = [0.1, 0.5, 0.9, 0.2, 0.7]
    for v, p in zip(values, probabilities, strict=True):
        one.add([v], p)
    one.drain()
    batch.count_batch(np.array([[v] for v in values], np.float32), np.array(probabilities, np.float32))
    assert one.merged([one.snapshot()], 600.0) == (5, [[1, 2, 2], [2, 3]])
    assert batch.merged([batch.snapshot()], 600.0) == one.merged([one.snapshot()], 600.0)


def test_old_slots_leave_the_window_and_workers_merge_by_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("server.monitoring.drift.time.time", lambda: now[0])
    a, b = _window(slots=3), _window(slots=3)
    a.add([0.5], 0.1)  # slot 0
    a.drain()
    now[0] = 61.0
    b.add([1.5], 0.9)  # slot 1, another worker
    b.drain()
    now[0] = 125.0
    a.add([7.0], 0.9)  # slot 2
    a.drain()
    assert a.merged([a.snapshot(), b.snapshot()], 125.0)[0] == 3
    assert a.merged([a.snapshot(), b.snapshot()], 185.0)[0] == 2  # slot 0 has left a 3-slot window
    now[0] = 185.0 + 120
    a.add([7.0], 0.9)  # slot 5 reuses slot 2's place: what it held is gone
    a.drain()
    rows, counts = a.merged([a.snapshot(), b.snapshot()], now[0])
    assert rows == 1 and counts == [[0, 0, 1], [0, 1]]


def test_too_few_rows_report_no_psi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.monitoring.drift.time.time", lambda: 0.0)
    window = _window()
    for _ in range(5):
        window.add([1.5], 0.6)  # counted when the snapshot drains the queue
    assert window.report([window.snapshot()], 0.0, min_rows=6)["psi"] == {"x": None, PREDICTION: None}
    report = window.report([window.snapshot()], 0.0, min_rows=5)
    assert report["rows"] == 5 and report["psi"]["x"] > 0.2


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"features": {}, "prediction": {"edges": [0.5], "shares": [0.5, 0.5]}}, "lacks a usable entry"),
        (
            {
                "features": {"x": {"edges": [2, 1], "shares": [0.2, 0.3, 0.5]}},
                "prediction": {"edges": [], "shares": [1]},
            },
            "need sorted edges",
        ),
        (
            {"features": {"x": {"edges": [1], "shares": [0.2, 0.3]}}, "prediction": {"edges": [], "shares": [1]}},
            "do not sum to 1",
        ),
    ],
)
def test_a_malformed_reference_is_refused_naming_it(reference: dict[str, object], message: str) -> None:
    with pytest.raises(DriftReferenceError, match=message):
        read_reference(reference, ["x"])


def test_a_large_batch_is_counted_through_a_weighted_sample_that_keeps_its_shares() -> None:
    """10,000 rows in one batch: about 128 are binned, each standing for its share of rows; the window still
    holds 10,000 rows and its bin shares are those of the whole batch, within sampling error."""
    rng = np.random.default_rng(3)
    edges = (1.0, 2.0, 3.0)
    columns = [Column("x", edges, (0.25, 0.25, 0.25, 0.25)), Column(PREDICTION, (0.5,), (0.5, 0.5))]
    X = rng.choice([0.5, 1.5, 2.5, 3.5], p=[0.1, 0.2, 0.3, 0.4], size=(10_000, 1)).astype(np.float32)
    window = DriftWindow(columns, slots=2, slot_seconds=3600, seed=3)  # one fixed sample: no flaky run
    window.add_batch(X, rng.random(10_000).astype(np.float32))
    window.drain()
    rows, counts = window.merged([window.snapshot()], time.time())
    assert rows == 10_000
    shares = np.array(counts[0]) / sum(counts[0])
    np.testing.assert_allclose(shares, [0.1, 0.2, 0.3, 0.4], atol=0.1)
    assert abs(sum(counts[0]) - 10_000) <= 10_000 // 128 + 1


def test_performance_is_estimated_from_the_windows_scores_and_merges_across_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.classification import ScoreGroups

    monkeypatch.setattr("server.monitoring.drift.time.time", lambda: 600.0)
    rng = np.random.default_rng(5)
    p = rng.beta(2, 3, size=4000)
    X = rng.uniform(0, 3, size=(4000, 1))
    one, first, second = _window(), _window(), _window()
    one.count_batch(X, p)
    first.count_batch(X[:1500], p[:1500])
    second.count_batch(X[1500:], p[1500:])
    exact = ScoreGroups(0.5)
    exact.add(p)
    whole = one.estimate([one.snapshot()], 600.0, min_rows=100)
    assert whole == pytest.approx(exact.estimate(), abs=1e-12)
    # Two workers' windows add up to one window holding every row.
    assert one.estimate([first.snapshot(), second.snapshot()], 600.0, 100) == pytest.approx(whole, abs=1e-12)
    assert one.estimate([one.snapshot()], 600.0, min_rows=5000) is None  # too few rows: no estimate
    assert one.estimate([one.snapshot()], 600.0 + 3 * 60, 100) is None  # the window moved past them
