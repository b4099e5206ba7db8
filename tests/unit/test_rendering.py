"""A /predict result rendered from its constant parts is byte for byte what serializing the whole object gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from common.model.loader import load_model
from server.core.served import ORJSON_NUMPY, ServedModel


@pytest.mark.parametrize("ident", [None, "user-7", 12345678901234567890, 'ünïcode "quoted"'])
def test_one_result_is_the_whole_object_serialized(exported: Path, ident: object) -> None:
    served = ServedModel(load_model(exported), 100, None, b"", b"")
    threshold = np.float32(served.threshold)
    probabilities = [0.0, 1.0, 1e-8, 0.26285136, threshold, np.nextafter(threshold, np.float32(0)), 0.99999994]
    for p in np.array(probabilities, dtype=np.float32):
        whole = {"churn_probability": p, "churn": p >= served.threshold, "threshold": served.threshold}
        whole["model_version"] = served.version
        if ident is not None:
            whole = {"id": ident, **whole}
        assert served.render_one(p, ident) == orjson.dumps(whole, option=ORJSON_NUMPY)  # type: ignore[arg-type]
