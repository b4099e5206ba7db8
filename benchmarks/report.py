"""The benchmark report: a markdown table with ratios and conditions, and two plots, written to assets/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHADOW_SCENARIO = "/predict with a 10% shadow [1000]"  # benchmarks.run: the shadow server's batch scenario
STOCK = " stock"  # the suffix benchmarks.run gives a scenario measured on the stock-mode server

SERVER_LABELS = {
    "ours": "ML-PulseChecker",
    "ours_stock": "ML-PulseChecker, stock mode (uvicorn serving the ASGI app)",
    "ours_shadow": "ML-PulseChecker with a shadow model on 10% of requests",
    "original": "original design (FastAPI + pydantic + DataFrame + sklearn)",
    "bare_starlette": "bare Starlette route (orjson parse, constant)",
    "raw_asgi": "raw ASGI callable on uvicorn (orjson parse, constant)",
    "python_floor": "Python floor: uvloop + httptools + orjson, no ASGI (parse, constant)",
}


def _spread(entry: dict[str, float], fmt: str = "{:,.0f}", scale: float = 1.0) -> str:
    median, low, high = (entry[k] * scale for k in ("median", "min", "max"))
    return f"{fmt.format(median)} ({fmt.format(low)}–{fmt.format(high)})"


def _ratio(a: dict[str, float], b: dict[str, float]) -> str:
    return f"{a['median'] / b['median']:.2f}×"


def render_markdown(results: dict[str, Any]) -> str:
    c = results["conditions"]
    single, ours, floor = results["single"], results["ours"], results["in_process"]
    lines = [
        "### Single-row `POST /predict`, peak throughput (wrk, 16 connections)",
        "",
        "| server | requests/s | p50 ms | p95 ms | p99 ms | errors | server CPU % | RSS MB | start-up to ready s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in single.items():
        lines.append(
            f"| {SERVER_LABELS[name]} | {_spread(entry['rps'])} | {_spread(entry['p50_us'], '{:.2f}', 1e-3)} | "
            f"{_spread(entry['p95_us'], '{:.2f}', 1e-3)} | {_spread(entry['p99_us'], '{:.2f}', 1e-3)} | "
            f"{entry['errors']} | {entry['cpu_percent']['median']:.0f} | {entry['rss_mb']['median']:.0f} | "
            f"{results['startup_s'][name]:.2f} |"
        )
    us = single["ours"]["rps"]
    floor_rows = floor["onnx_rows_per_s_1000"]
    batch_1000 = ours["/predict [1000]"]["rows_per_s"]["median"] / floor_rows
    columns_1000 = ours["/predict columns [1000]"]["rows_per_s"]["median"] / floor_rows
    v2_1000 = ours["/v2 infer [1000]"]["rows_per_s"]["median"] / floor_rows
    binary_1000 = ours["/v2 infer binary [1000]"]["rows_per_s"]["median"] / floor_rows
    both_ways_1000 = ours["/v2 infer binary in and out [1000]"]["rows_per_s"]["median"] / floor_rows
    lines += [
        "",
        f"Ratios (medians): ours / original design **{_ratio(us, single['original']['rps'])}**, "
        f"ours / bare Starlette **{_ratio(us, single['bare_starlette']['rps'])}** "
        f"(p99 {single['ours']['p99_us']['median'] / single['bare_starlette']['p99_us']['median']:.2f}× the bare "
        f"route's), ours / raw ASGI **{_ratio(us, single['raw_asgi']['rps'])}**, "
        f"ours / the Python floor **{_ratio(us, single['python_floor']['rps'])}**; "
        f"{single['ours']['rows_per_call']['median']:.1f} rows per onnxruntime call under {c['wrk_connections']} "
        "connections; "
        f"1000-row batches over HTTP / in-process onnxruntime rows/s: `/predict` (JSON objects) "
        f"**{batch_1000:.2f}×**, `/predict` (JSON columns) **{columns_1000:.2f}×**, V2 infer with a JSON tensor "
        f"**{v2_1000:.2f}×**, with the binary tensor extension **{binary_1000:.2f}×** (JSON answer) and "
        f"**{both_ways_1000:.2f}×** (binary answer too). Fast mode / stock mode (`PULSE_HTTP`): single row "
        f"**{_ratio(us, single['ours_stock']['rps'])}**, 1000-row scenarios "
        + ", ".join(
            f"`{label.removesuffix(STOCK)}` **{_ratio(ours[label.removesuffix(STOCK)]['rps'], entry['rps'])}**"
            for label, entry in ours.items()
            if label.endswith(STOCK)
        )
        + ".",
        *_grpc_lines(results),
        *_shadow_line(results),
        "",
        "### Our other scenarios (wrk, 16 connections; gRPC: h2load, 16 calls in flight)",
        "",
        "| scenario | requests/s | rows/s | p50 ms | p99 ms | errors | server CPU % | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in ours.items():
        if "p50_us" in entry:
            latency = f"{_spread(entry['p50_us'], '{:.2f}', 1e-3)} | {_spread(entry['p99_us'], '{:.2f}', 1e-3)}"
        else:  # h2load reports a mean, not percentiles
            latency = f"mean {_spread(entry['mean_us'], '{:.2f}', 1e-3)} | –"
        lines.append(
            f"| `{label}` | {_spread(entry['rps'])} | {_spread(entry['rows_per_s'])} | {latency} | "
            f"{entry['errors']} | {entry['cpu_percent']['median']:.0f} | {entry['rss_mb']['median']:.0f} |"
        )
    lines += [
        "",
        "### At a fixed offered load (locust, FastHttpUser)",
        "",
        "| server | traffic | offered → served requests/s | p50 ms | p95 ms | p99 ms | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results["locust"].items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return sorted(r[key] for r in runs)[len(runs) // 2]

        lines.append(
            f"| {SERVER_LABELS[name]} | {runs[0]['user_class']} | {med('rps'):.0f} | {med('p50_ms'):.0f} | "
            f"{med('p95_ms'):.0f} | {med('p99_ms'):.0f} | {sum(r['failures'] for r in runs)} |"
        )
    cpu_bound = any(r["cpu_warning"] for runs in results["locust"].values() for r in runs)
    lines += [
        "",
        f"In-process floor (same model, one thread): onnxruntime {floor['onnx_single_row_us']:.1f} µs per single "
        f"row (pre-bound buffers), {floor['onnx_rows_per_s_1000']:,.0f} rows/s in 1000-row batches; "
        f"scikit-learn `predict_proba` on a one-row DataFrame {floor['sklearn_single_row_us']:,.0f} µs.",
        *(_explain_lines(results) if "explain_rows_per_s_1000" in floor else []),
        "",
        f"Conditions: {c['cpu']} ({c['cores']} cores), {c['date']}, commit {c['commit']}. Each server alone on "
        f"core {c['server_core']} with {c['workers']} worker (uvloop, httptools, no access log), "
        f"onnxruntime {c['ort_threads']} thread; load generator on core {c['load_core']}. "
        f"{c['rounds']} interleaved rounds of {c['seconds_per_run']:g} s per run, median (min–max); warm-up: "
        f"{c['warmup']}. Python {c['python']}, onnxruntime {c['onnxruntime']}, starlette {c['starlette']}, "
        f"uvicorn {c['uvicorn']}, fastapi {c['fastapi']}, scikit-learn {c['scikit-learn']}, locust {c['locust']}, "
        f"{c['wrk']}. Locust {'warned' if cpu_bound else 'did not warn'} that it was CPU-bound.",
    ]
    return "\n".join(lines) + "\n"


def _shadow_line(results: dict[str, Any]) -> list[str]:
    single, ours = results["single"], results["ours"]
    if "ours_shadow" not in single or SHADOW_SCENARIO not in ours:
        return []
    return [
        "",
        "A shadow model scoring 10% of requests after their answers (`PULSE_SHADOW_SAMPLE=0.1`), same run: single "
        f"row **{_ratio(single['ours_shadow']['rps'], single['ours']['rps'])}** the requests/s without it, "
        f"1000-row `/predict` **{_ratio(ours[SHADOW_SCENARIO]['rps'], ours['/predict [1000]']['rps'])}**.",
    ]


def _grpc_lines(results: dict[str, Any]) -> list[str]:
    ours, floor = results["ours"], results["in_process"]
    batch, one = ours.get("gRPC ModelInfer raw [1000]"), ours.get("gRPC ModelInfer raw [1]")
    constant = ours.get("gRPC ModelInfer raw [1] constant")
    batch_constant = ours.get("gRPC ModelInfer raw [1000] constant")
    if batch is None or one is None or constant is None or batch_constant is None:
        return []
    http_one = results["single"]["ours"]["rps"]["median"]
    onnx_rows = floor["onnx_rows_per_s_1000"]
    # What one core can do at best: grpc.aio's own time per call (its constant's) plus onnxruntime's for 1000 rows.
    ceiling = 1 / (1 / batch_constant["rps"]["median"] + 1000 / onnx_rows)
    return [
        "",
        f"gRPC (`PULSE_GRPC_PORT`, `ModelInfer` with `raw_input_contents`, h2load: 4 connections x 4 streams): "
        f"single row {one['rps']['median']:,.0f} calls/s, **{one['rps']['median'] / constant['rps']['median']:.2f}×** "
        f"a constant-returning grpc.aio handler on the same core ({constant['rps']['median']:,.0f} calls/s, "
        f"`benchmarks/reference/grpc_constant.py`) and {one['rps']['median'] / http_one:.2f}× HTTP single-row "
        f"`/predict`; 1000-row batches {batch['rows_per_s']['median']:,.0f} rows/s, "
        f"**{batch['rows_per_s']['median'] / onnx_rows:.2f}×** in-process onnxruntime rows/s. grpc.aio answering "
        f"1000-row calls with a constant takes {1e6 / batch_constant['rps']['median']:,.0f} µs a call, onnxruntime "
        f"{1e9 / onnx_rows:,.0f} µs for the rows: one core's ceiling with both is {ceiling * 1000 / onnx_rows:.2f}× "
        f"in-process rows/s, and the door reaches **{batch['rps']['median'] / ceiling:.2f}×** of it.",
    ]


def _explain_lines(results: dict[str, Any]) -> list[str]:
    floor, ours = results["in_process"], results["ours"]
    explained = ours.get("/predict?explain=3 [1]")
    http = ""
    if explained:
        ratio = explained["rps"]["median"] / results["single"]["ours"]["rps"]["median"]
        http = f"Over HTTP, single-row `/predict?explain=3` serves **{ratio:.2f}×** the requests/s of plain `/predict`."
    graph = "the model file's own graph" if floor.get("explain_in_graph") else "the per-row algorithm"
    python = ""
    if "explain_python_rows_per_s_1000" in floor:
        python = (
            f" (the per-row algorithm in Python, the fallback: {floor['explain_python_single_row_us']:.1f} µs, "
            f"{floor['explain_python_rows_per_s_1000']:,.0f} rows/s)"
        )
    return [
        "",
        f"Reason codes (exact TreeSHAP, in-process, one thread, computed by {graph}): "
        f"{floor['explain_single_row_us']:.1f} µs for one row; {floor['explain_rows_per_s_1000']:,.0f} rows/s in "
        f"1000-row batches{python}, vs {floor['shap_rows_per_s_1000']:,.0f} rows/s for `shap.TreeExplainer` (C++) "
        f"on the same rows (**{floor['explain_rows_per_s_1000'] / floor['shap_rows_per_s_1000']:.1f}×**). {http}",
    ]


def write_plots(results: dict[str, Any], assets: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = results["single"]
    names = list(single)
    labels = [SERVER_LABELS[n].split(" (")[0].replace("ML-PulseChecker, stock mode", "ours, stock") for n in names]
    medians = [single[n]["rps"]["median"] for n in names]
    errors = [
        [m - single[n]["rps"]["min"] for n, m in zip(names, medians, strict=True)],
        [single[n]["rps"]["max"] - m for n, m in zip(names, medians, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    colors = ["crimson" if n == "ours" else "salmon" if n == "ours_stock" else "slategray" for n in names]
    ax.barh(labels, medians, xerr=errors, color=colors)
    ax.set(xlabel="requests/s (median, min–max)", title="Single-row /predict, one worker on one core")
    ax.invert_yaxis()
    fig.savefig(assets / "bench_throughput.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.25
    for i, pct in enumerate(("p50_us", "p95_us", "p99_us")):
        values = [single[n][pct]["median"] / 1000 for n in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=pct.split("_")[0])
    ax.set_xticks([x + width for x in range(len(names))], labels, fontsize=8)
    ax.set(ylabel="ms (log scale)", yscale="log", title="Latency percentiles at peak load (wrk, 16 connections)")
    ax.legend()
    fig.savefig(assets / "bench_latency.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(results: dict[str, Any], assets: Path) -> None:
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "benchmarks.md").write_text(render_markdown(results))
    (assets / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plots(results, assets)
