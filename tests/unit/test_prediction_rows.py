"""How a chunk of scored users becomes prediction rows (both engines build them here)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

from common.features import feature_set
from score.model import ScoreError, ScoringSpec
from score.output import feature_matrix, prediction_fields, with_predictions

SPEC = ScoringSpec(feature_set("seed"), 0.5, "rf-test", "0" * 64, "seed", 30, {})


def _batch(**overrides: list[float]) -> pa.RecordBatch:
    columns = {"user_id": pa.array(["a", "b"])}
    for name in SPEC.names:
        columns[name] = pa.array(overrides.get(name, [1.0, 2.0]))
    return pa.record_batch(columns)


def test_rows_get_the_flag_by_the_servers_rule_and_the_run_constants() -> None:
    batch = _batch()
    out = with_predictions(batch, np.array([0.5, 0.49999997], np.float32), SPEC, datetime(2026, 3, 1))
    assert out.schema.names == [*batch.schema.names, *(f.name for f in prediction_fields())]
    assert out.column("churn").to_pylist() == [True, False]  # p >= threshold, p as the float32 the model gave
    assert out.column("model_version").to_pylist() == ["rf-test", "rf-test"]
    assert out.column("cutoff").to_pylist() == [datetime(2026, 3, 1)] * 2


def test_the_model_input_is_the_features_in_the_models_order() -> None:
    X = feature_matrix(_batch(active_days=[7.0, 8.0]), SPEC.names)
    assert X.dtype == np.float32 and X[:, SPEC.names.index("active_days")].tolist() == [7.0, 8.0]


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_feature_that_is_not_a_finite_number_is_refused_by_name(value: float) -> None:
    with pytest.raises(ScoreError, match="feature 'avg_events_per_session' is not a finite number for 1 users"):
        feature_matrix(_batch(avg_events_per_session=[1.0, value]), SPEC.names)


def test_a_cutoff_with_an_offset_is_read_in_utc_and_one_before_the_log_is_refused() -> None:
    from datetime import timedelta, timezone

    from score.model import check_cutoff

    first, last = datetime(2026, 1, 1), datetime(2026, 3, 1)
    paris = timezone(timedelta(hours=1))
    assert check_cutoff(datetime(2026, 2, 1, 1, 0, tzinfo=paris), first, last) == datetime(2026, 2, 1, 0, 0)
    assert check_cutoff(None, first, last) == last
    with pytest.raises(ScoreError, match="cutoff 2025-12-31T00:00:00 is before the log's first event"):
        check_cutoff(datetime(2025, 12, 31), first, last)
