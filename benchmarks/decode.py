"""What a 1000-row batch costs in-process, shape by shape, before any HTTP: decode, validate, score, render.

    python -m benchmarks decode [--artifacts artifacts] [--rows 1000]

The harness (``benchmarks run``) measures each batch shape over HTTP as a share of onnxruntime's in-process rows/s.
This splits that share: with the server's own functions on the harness's distinct bodies in turn, one thread,
medians of repeated calls, it prints each shape's decode (orjson), validation (the server's parser) and rendering
time beside the onnxruntime call, and the ceiling they leave: onnxruntime's time over the whole, the share an HTTP
layer that cost nothing would reach.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.run import DISTINCT_BODIES, _batch, _rows, batch_call_seconds


def _median_us(call: Callable[[int], object], repeat: int) -> float:
    """Median microseconds of ``call(i)`` with ``i`` cycling through the distinct bodies."""
    for i in range(20):
        call(i % DISTINCT_BODIES)
    timings = []
    for i in range(repeat):
        started = time.perf_counter()
        call(i % DISTINCT_BODIES)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


def measure(artifacts: Path, n_rows: int, repeat: int) -> dict[str, Any]:
    from common.model.loader import load_model
    from server.core.served import ORJSON_NUMPY, ServedModel
    from server.core.v2 import infer_response, parse_infer_request, split_binary_body

    model = load_model(artifacts / "model.onnx", threads=1)
    info = model.info
    records, rows, _ = _rows(artifacts, Path(tempfile.mkdtemp(prefix="pulse-decode-")), DISTINCT_BODIES * n_rows)
    batches = [_batch(rows, n_rows, i) for i in range(DISTINCT_BODIES)]
    batch_records = [records[i * n_rows : (i + 1) * n_rows] for i in range(DISTINCT_BODIES)]
    served = ServedModel(model, max(n_rows, 1000), None, b"{}", b"{}")  # its parser and renderers
    parser = served.parser
    churn = [model.churn_probability(X) for X in batches]
    probabilities = [model.predict_proba(X) for X in batches]

    objects = [json.dumps(batch).encode() for batch in batch_records]
    columns = [
        json.dumps({name: [r[name] for r in batch] for name in info.features}).encode() for batch in batch_records
    ]
    tensor = {"name": info.input_name, "shape": [n_rows, len(info.features)], "datatype": "FP32"}
    v2_json = [json.dumps({"inputs": [{**tensor, "data": X.ravel().tolist()}]}).encode() for X in batches]
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": batches[0].nbytes}}]}).encode()
    v2_binary, header_length = [header + X.tobytes() for X in batches], str(len(header))
    binary_output = frozenset({info.probability_output})

    def v2_render(i: int) -> bytes:
        return orjson.dumps(infer_response("churn", info, probabilities[i], None)[0], option=ORJSON_NUMPY)

    def v2_render_binary(i: int) -> bytes:
        response, chunks = infer_response("churn", info, probabilities[i], None, binary_outputs=binary_output)
        return b"".join([orjson.dumps(response, option=ORJSON_NUMPY), *chunks])

    def binary_parse(i: int) -> object:
        head, data = split_binary_body(v2_binary[i], header_length)
        return parse_infer_request(orjson.loads(head), info, n_rows, data)

    shapes: dict[str, dict[str, Callable[[int], object]]] = {
        "/predict JSON objects": {
            "decode": lambda i: orjson.loads(objects[i]),
            "decode+validate": lambda i: parser.parse(objects[i]),
            "render": lambda i: served.render_batch(churn[i]),
        },
        "/predict JSON columns": {
            "decode": lambda i: orjson.loads(columns[i]),
            "decode+validate": lambda i: parser.parse(columns[i]),
            "render": lambda i: served.render_columns(churn[i]),
        },
        "V2 JSON tensor": {
            "decode": lambda i: orjson.loads(v2_json[i]),
            "decode+validate": lambda i: parse_infer_request(orjson.loads(v2_json[i]), info, n_rows),
            "render": v2_render,
        },
        "V2 binary tensor": {
            "decode": lambda i: orjson.loads(header),
            "decode+validate": binary_parse,
            "render": v2_render,
        },
        "V2 binary tensor, binary output": {
            "decode": lambda i: orjson.loads(header),
            "decode+validate": binary_parse,
            "render": v2_render_binary,
        },
    }
    bodies = {
        "/predict JSON objects": objects[0],
        "/predict JSON columns": columns[0],
        "V2 JSON tensor": v2_json[0],
        "V2 binary tensor": v2_binary[0],
        "V2 binary tensor, binary output": v2_binary[0],
    }
    onnxruntime_us = batch_call_seconds(model.predict_proba, batches, repeat) * 1e6
    results: dict[str, Any] = {"rows": n_rows, "onnxruntime_us": round(onnxruntime_us, 1), "shapes": {}}
    for shape, calls in shapes.items():
        timed = {stage: _median_us(call, repeat) for stage, call in calls.items()}
        besides = timed["decode+validate"] + timed["render"]
        results["shapes"][shape] = {
            "body_bytes": len(bodies[shape]),
            **{f"{stage}_us": round(us, 1) for stage, us in timed.items()},
            "ceiling": round(onnxruntime_us / (onnxruntime_us + besides), 2),
        }
    return results


def add_parser(commands: Any) -> None:
    """``python -m benchmarks decode``."""
    parser = commands.add_parser(
        "decode",
        help="in-process cost of decoding, validating and rendering each batch shape beside onnxruntime",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder holding model.onnx")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch")
    parser.add_argument("--repeat", type=int, default=300, help="timed calls per figure (their median is reported)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    results = measure(args.artifacts, args.rows, args.repeat)
    print(f"{results['rows']}-row batch, one thread: onnxruntime {results['onnxruntime_us']:.0f} us")
    print("| shape | body bytes | decode us | decode + validate us | render us | ceiling (onnxruntime / all) |")
    print("|---|---|---|---|---|---|")
    for shape, r in results["shapes"].items():
        print(f"| {shape} | {r['body_bytes']:,} | {r['decode_us']:.0f} | {r['decode+validate_us']:.0f} "
              f"| {r['render_us']:.0f} | {r['ceiling']:.2f}x |")  # fmt: skip
    return 0
