"""The loaded model with everything a request needs from it prepared once: the row parser, the constant parts of
``/predict`` results, and the rendered ``/metadata`` and ``/openapi.json`` documents."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from common.model.loader import Model
from server.core.ids import Id
from server.core.validation import RowParser
from server.monitoring.drift import DriftWindow
from server.monitoring.request_log import ModelLog

ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class ServedModel:
    """A model as the pipeline serves it (one per model load: a swap replaces the whole object)."""

    def __init__(
        self,
        model: Model,
        max_batch: int,
        request_log: ModelLog | None,
        metadata: bytes,
        openapi: bytes,
        drift: DriftWindow | None = None,
    ) -> None:
        info = model.info
        self.drift = drift  # this model's live drift window: a request counts its rows where it was scored
        self.model = model
        self.metadata = metadata
        self.openapi = openapi
        self.info = info
        self.parser = RowParser(info.features, info.minimums, max_batch)
        self.threshold = info.threshold
        self.version = info.version
        self.request_log = request_log
        constant = orjson.dumps({"threshold": info.threshold, "model_version": info.version})[1:]
        self._churned_tail = b',"churn":true,' + constant
        self._stayed_tail = b',"churn":false,' + constant

    def render_one(self, p: Any, ident: Id | None = None) -> bytes:
        """One result from its constant parts: only the probability (and the id) is serialized per request."""
        tail = self._churned_tail if p >= self.threshold else self._stayed_tail
        probability = orjson.dumps(p, option=ORJSON_NUMPY)
        if ident is not None:
            return b'{"id":' + orjson.dumps(ident) + b',"churn_probability":' + probability + tail
        return b'{"churn_probability":' + probability + tail

    def render_columns(self, proba: npt.NDArray[np.float32], ids: list[Id | None] | None = None) -> bytes:
        """The columnar answer to a columnar batch: one list per result field (the ids first, when sent)."""
        return orjson.dumps(
            {
                **({"id": ids} if ids is not None else {}),
                "churn_probability": proba,
                "churn": proba >= self.threshold,
                "threshold": self.threshold,
                "model_version": self.version,
            },
            option=ORJSON_NUMPY,
        )

    def render_batch(self, proba: npt.NDArray[np.float32], ids: list[Id | None] | None = None) -> bytes:
        # Same JSON as one dict per row, built from bytes: orjson formats the probabilities in one C call.
        numbers = orjson.dumps(proba, option=ORJSON_NUMPY)[1:-1].split(b",")
        churned, stayed = self._churned_tail, self._stayed_tail
        rows = [
            b'{"churn_probability":' + number + (churned if churn else stayed)
            for number, churn in zip(numbers, (proba >= self.threshold).tolist(), strict=True)
        ]
        if ids is not None:  # each row's id first, as the caller sent it
            rows = [
                row if i is None else b'{"id":' + orjson.dumps(i) + b"," + row[1:]
                for row, i in zip(rows, ids, strict=True)
            ]
        return b"[" + b",".join(rows) + b"]"
