"""Request, stage, model and drift metrics in Prometheus text format, right with any number of worker processes.

Recording is plain Python arithmetic on this worker's own numbers: no locks, no shared memory, nothing extra on
the request path. With a metrics folder (``PULSE_METRICS_DIR``; ``python -m server --workers N`` makes one), each
worker writes a JSON snapshot of its numbers there every ``metrics_flush_seconds`` (atomically: a new file renamed
over the old one), and the worker that answers a scrape writes its own first, then sums every worker's snapshot.
Counters and histograms of workers that have exited stay in the sums (totals never go back); gauges count live
workers only. Another worker's figures are at most one flush interval old.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from common.model.reference import PREDICTION
from server.monitoring.drift import DriftWindow
from server.monitoring.request_log import RequestLog
from server.monitoring.shadow import LATENCY_BUCKETS as SHADOW_BUCKETS, Shadow, merged as merged_shadow

logger = logging.getLogger(__name__)

generate_openmetrics: Callable[[CollectorRegistry], bytes] = openmetrics_exposition.generate_latest  # untyped there
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMPUTE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1)
STAGE_BUCKETS = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1)
METRICS_KEY = (
    "pulse.metrics"  # lifespan state: how a worker's connections (server.http.fast.protocol) reach its metrics
)
STAGES = ("read_parse", "inference", "render")  # body read + JSON parse + validation; onnxruntime; response JSON


class Histogram:
    """Cumulative-on-read histogram: ``observe`` bumps one bucket."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: Sequence[float], counts: list[int] | None = None, total: float = 0.0) -> None:
        self.buckets = tuple(buckets)
        self.counts = counts if counts is not None else [0] * (len(self.buckets) + 1)
        self.total = total

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def observe_all(self, values: Sequence[float]) -> None:
        """``observe`` for each of ``values`` (a turn's requests at once)."""
        counts, buckets = self.counts, self.buckets
        for value in values:
            counts[bisect_left(buckets, value)] += 1
        self.total += sum(values)

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Metrics:
    """This worker's figures. ``info``, ``drift`` and ``ready`` are set once the model is loaded."""

    def __init__(self, folder: Path | None = None, min_drift_rows: int = 100, estimate_tolerance: float = 0.05) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.latency: defaultdict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.stages: defaultdict[tuple[str, str], Histogram] = defaultdict(lambda: Histogram(STAGE_BUCKETS))
        self._stages_by_route: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        self.compute = Histogram(COMPUTE_BUCKETS)
        self.rows = 0
        self.in_flight = 0
        self.connections = 0  # open HTTP connections, kept by server.http.fast.protocol
        self.rejected: defaultdict[tuple[str, int], int] = defaultdict(int)  # refused by the HTTP layer or the gate
        self.pid = os.getpid()
        self.start = process_start(self.pid)  # with the pid: this worker's life (its snapshot file's name)
        self.info: dict[str, str] = {}
        self.request_log: RequestLog | None = None  # its counters, and its shadow's figures
        self.trace_counters: dict[str, int] | None = None  # the tracer's (spans exported, dropped), when tracing
        self.exemplars: dict[str, dict[int, tuple[str, float, float]]] = {}  # route -> bucket -> (trace, s, time)
        self.drift: DriftWindow | None = None
        self.min_drift_rows = min_drift_rows
        self.estimate_tolerance = estimate_tolerance  # the alert's floor: the test ROC-AUC less this
        self.test_roc_auc: float | None = None  # the served model card's, set with ``info``
        self.ready: Callable[[], bool] = lambda: False
        self.folder = folder

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route].observe(seconds)

    def observe_answers(self, route: str, statuses: Sequence[int], seconds: Sequence[float]) -> None:
        """``observe_request`` for the requests of one route answered together (one turn's)."""
        requests = self.requests
        for status in statuses:
            requests[(route, status)] += 1
        self.latency[route].observe_all(seconds)

    def observe_exemplar(self, route: str, trace_id: str, seconds: float) -> None:
        """A traced request's latency, kept as its bucket's exemplar (the latest per bucket): on an OpenMetrics
        scrape the latency histogram points at that trace."""
        self.exemplars.setdefault(route, {})[bisect_left(LATENCY_BUCKETS, seconds)] = (trace_id, seconds, time.time())

    def observe_stages(self, route: str, read_parse: float, inference: float, render: float) -> None:
        """One inference request's stages (its inference stage may be a call shared with other requests)."""
        read_hist, inference_hist, render_hist = self._stage_histograms(route)
        read_hist.observe(read_parse)
        inference_hist.observe(inference)
        render_hist.observe(render)

    def observe_stages_all(
        self, route: str, read_parse: Sequence[float], inference: float, render: Sequence[float]
    ) -> None:
        """``observe_stages`` for requests scored in one call: their inference stage is that call's time."""
        read_hist, inference_hist, render_hist = self._stage_histograms(route)
        read_hist.observe_all(read_parse)
        inference_hist.counts[bisect_left(inference_hist.buckets, inference)] += len(read_parse)
        inference_hist.total += inference * len(read_parse)
        render_hist.observe_all(render)

    def observe_call(self, seconds: float, rows: int) -> None:
        """One onnxruntime call and the rows it scored."""
        self.compute.observe(seconds)
        self.rows += rows

    def _stage_histograms(self, route: str) -> tuple[Histogram, Histogram, Histogram]:
        found = self._stages_by_route.get(route)
        if found is None:
            found = self._stages_by_route[route] = (
                self.stages[(route, "read_parse")],
                self.stages[(route, "inference")],
                self.stages[(route, "render")],
            )
        return found

    def _shadow(self) -> Shadow | None:
        return self.request_log.shadow if self.request_log is not None else None

    def is_live(self, snapshot: dict[str, Any]) -> bool:
        """Whether ``snapshot`` is of a worker life still running (this one, or another worker's)."""
        if (snapshot["pid"], snapshot.get("start")) == (self.pid, self.start):
            return True
        return snapshot["pid"] != self.pid and alive(snapshot["pid"], snapshot.get("start"))

    # Snapshots: one JSON file per worker life ---------------------------------------------------------------------
    def snapshot(self, in_flight: int | None = None) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "start": self.start,
            "time": time.time(),
            "requests": [[route, status, n] for (route, status), n in self.requests.items()],
            "latency": {route: [h.counts, h.total] for route, h in self.latency.items()},
            "stages": [[route, stage, h.counts, h.total] for (route, stage), h in self.stages.items()],
            "compute": [self.compute.counts, self.compute.total],
            "rows": self.rows,
            "in_flight": self.in_flight if in_flight is None else in_flight,
            "connections": self.connections if in_flight is None else 0,
            "rejected": [[reason, status, n] for (reason, status), n in self.rejected.items()],
            "ready": self.ready(),
            "info": self.info,
            "log": self.request_log.counters() if self.request_log is not None else {},
            "traces": dict(self.trace_counters) if self.trace_counters is not None else {},
            "exemplars": [
                [route, bucket, *exemplar] for route, by in self.exemplars.items() for bucket, exemplar in by.items()
            ],
            "shadow": shadow.snapshot() if (shadow := self._shadow()) is not None else None,
            "drift": self.drift.snapshot() if self.drift is not None else None,
        }

    def flush(self, in_flight: int | None = None) -> None:
        """Write this worker's snapshot into the metrics folder (no-op without one)."""
        if self.folder is None:
            return
        path = self.folder / f"worker-{self.pid}-{self.start or 0}.json"
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.snapshot(in_flight)))
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("metrics snapshot not written path=%s reason=%s", path, exc.strerror)

    def snapshots(self) -> list[dict[str, Any]]:
        """Every worker's latest snapshot (this worker's written first), or this worker's alone without a folder."""
        if self.folder is None:
            return [self.snapshot()]
        self.flush()
        found = []
        for path in sorted(self.folder.glob("worker-*.json")):
            try:
                found.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):  # a file that vanished or was replaced mid-read: skip it
                continue
        return found

    def render(self, openmetrics: bool = False) -> bytes:
        """The Prometheus text format, or OpenMetrics (with the latency histogram's trace exemplars) when asked."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self, self.snapshots()))
        return generate_openmetrics(registry) if openmetrics else generate_latest(registry)


def live_snapshots(folder: Path) -> list[dict[str, Any]]:
    """The snapshots of the worker lives still running, read from ``folder`` (by a process that is not a worker)."""
    found = []
    for path in sorted(folder.glob("worker-*.json")):
        try:
            snapshot = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if alive(snapshot["pid"], snapshot.get("start")):
            found.append(snapshot)
    return found


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), ``None`` where /proc cannot say: with the
    pid, it names one process's life, which a pid alone does not once the pid is reused."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat_line.rsplit(b")", 1)[1].split()[19])  # field 22, counted after the command name
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, start: int | None = None) -> bool:
    """Whether the worker life ``(pid, start)`` is still running (a reused pid is another life)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process with that pid: alive
        pass
    return start is None or process_start(pid) in (start, None)


class _Collector(Collector):
    def __init__(self, metrics: Metrics, snapshots: list[dict[str, Any]]) -> None:
        self._m = metrics
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        m, snapshots = self._m, self._snapshots
        live = [s for s in snapshots if m.is_live(s)]
        requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        latency: dict[str, Histogram] = {}
        stages: dict[tuple[str, str], Histogram] = {}
        compute = Histogram(COMPUTE_BUCKETS)
        log: defaultdict[str, int] = defaultdict(int)
        traces: defaultdict[str, int] = defaultdict(int)
        exemplars: dict[tuple[str, int], tuple[str, float, float]] = {}  # the latest per (route, bucket)
        rejected: defaultdict[tuple[str, int], int] = defaultdict(int)
        by_pid: defaultdict[int, int] = defaultdict(int)  # the lives of a reused pid add up: the total stays monotone
        for s in snapshots:
            for route, status, n in s["requests"]:
                requests[(route, status)] += n
            for route, (counts, total) in s["latency"].items():
                latency.setdefault(route, Histogram(LATENCY_BUCKETS)).add(Histogram(LATENCY_BUCKETS, counts, total))
            for route, stage, counts, total in s["stages"]:
                stages.setdefault((route, stage), Histogram(STAGE_BUCKETS)).add(Histogram(STAGE_BUCKETS, counts, total))
            compute.add(Histogram(COMPUTE_BUCKETS, *s["compute"]))
            for reason, status, n in s["rejected"]:
                rejected[(reason, status)] += n
            for name, n in s["log"].items():
                log[name] += n
            for name, n in s.get("traces", {}).items():
                traces[name] += n
            for route, bucket, trace_id, seconds, when in s.get("exemplars", ()):
                if (route, bucket) not in exemplars or exemplars[(route, bucket)][2] < when:
                    exemplars[(route, bucket)] = (trace_id, seconds, when)
            by_pid[s["pid"]] += sum(n for _, _, n in s["requests"])
        per_worker = CounterMetricFamily(
            "pulse_worker_http_requests", "HTTP requests answered by each worker process", labels=["pid"]
        )
        for pid, n in sorted(by_pid.items()):
            per_worker.add_metric([str(pid)], n)

        family = CounterMetricFamily(
            "pulse_http_requests", "HTTP requests by route and status", labels=["route", "status"]
        )
        for (route, status), count in sorted(requests.items()):
            family.add_metric([route, str(status)], count)
        yield family
        hist = HistogramMetricFamily(
            "pulse_http_request_duration_seconds", "Time from request start to response sent", labels=["route"]
        )
        for route, h in sorted(latency.items()):
            buckets: list[Any] = h.cumulative()
            for (at, bucket), (trace_id, seconds, when) in exemplars.items():
                if at == route:
                    buckets[bucket] = (*buckets[bucket], Exemplar({"trace_id": trace_id}, seconds, when))
            hist.add_metric([route], buckets, h.total)
        yield hist
        refused = CounterMetricFamily(
            "pulse_http_rejected",
            "Requests and connections refused before reaching a handler: limits, timeouts, malformed HTTP",
            labels=["reason", "status"],
        )
        for (reason, status), count in sorted(rejected.items()):
            refused.add_metric([reason, str(status)], count)
        yield refused
        stage_family = HistogramMetricFamily(
            "pulse_stage_duration_seconds",
            "Time per stage of an inference request: read_parse (body, JSON, validation), inference, render",
            labels=["route", "stage"],
        )
        for (route, stage), h in sorted(stages.items()):
            stage_family.add_metric([route, stage], h.cumulative(), h.total)
        yield stage_family
        compute_family = HistogramMetricFamily("pulse_model_compute_seconds", "onnxruntime time per call")
        compute_family.add_metric([], compute.cumulative(), compute.total)
        yield compute_family
        yield CounterMetricFamily("pulse_predicted_rows", "Rows scored", value=sum(s["rows"] for s in snapshots))
        yield GaugeMetricFamily(
            "pulse_http_requests_in_flight", "Requests being handled", value=sum(s["in_flight"] for s in live)
        )
        yield GaugeMetricFamily(
            "pulse_http_connections", "Open HTTP connections", value=sum(s["connections"] for s in live)
        )
        yield GaugeMetricFamily("pulse_workers", "Worker processes alive and reporting", value=len(live))
        yield GaugeMetricFamily(
            "pulse_ready",
            "1 when every live worker has its model loaded and is not draining",
            value=float(bool(live) and all(s["ready"] for s in live)),
        )
        yield per_worker
        served: defaultdict[tuple[str, str], int] = defaultdict(int)
        for s in live:
            if s.get("info"):
                served[(s["info"]["version"], s["info"]["sha256"])] += 1
        if served:
            info = GaugeMetricFamily(
                "pulse_model_info", "Live workers serving each model (version, sha256)", labels=["sha256", "version"]
            )
            for (version, sha256), workers in sorted(served.items()):
                info.add_metric([sha256, version], workers)
            yield info
        for name, value in sorted(log.items()):
            yield CounterMetricFamily(f"pulse_request_log_{name}", f"Request log lines {name}", value=value)
        for name, value in sorted(traces.items()):  # spans_exported, spans_dropped: with tracing on
            yield CounterMetricFamily(f"pulse_trace_{name}", f"OpenTelemetry {name.replace('_', ' ')}", value=value)
        yield from self._drift(snapshots)
        shadow = m._shadow()
        if shadow is not None:  # this worker's candidate, summed over every worker life that scored it
            yield from _shadow_families(
                [s["shadow"] for s in snapshots if (s.get("shadow") or {}).get("sha256") == shadow.sha256]
            )

    def _drift(self, snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
        window = self._m.drift
        if window is None:
            return
        sha256 = self._m.info.get("sha256")  # merged per model: workers on another model count into other bins
        windows = [s["drift"] for s in snapshots if s["drift"] and s.get("info", {}).get("sha256") == sha256]
        report = window.report(windows, time.time(), self._m.min_drift_rows)
        yield GaugeMetricFamily(
            "pulse_drift_window_rows", "Scored rows in the live drift window, all workers", value=report["rows"]
        )
        psi = report["psi"]
        features = GaugeMetricFamily(
            "pulse_feature_psi", "Population Stability Index of a feature in the window vs training", labels=["feature"]
        )
        for name, value in psi.items():
            if value is not None and name != PREDICTION:
                features.add_metric([name], value)
        yield features
        yield from self._estimate(report["estimate"])
        prediction = psi.get(PREDICTION)
        if prediction is not None:
            yield GaugeMetricFamily(
                "pulse_prediction_psi",
                "Population Stability Index of P(churn) in the window vs training",
                value=prediction,
            )

    def _estimate(self, estimate: dict[str, float] | None) -> Iterator[Metric]:
        """Performance expected from the window's scores before any label exists (CBPE), beside the model card's."""
        test = self._m.test_roc_auc
        if test is not None:
            yield GaugeMetricFamily("pulse_model_test_roc_auc", "The served model's test-set ROC-AUC", value=test)
            yield GaugeMetricFamily(
                "pulse_estimated_roc_auc_floor",
                "Test ROC-AUC less PULSE_ESTIMATE_TOLERANCE: the estimate below it fires PulseEstimatedRocAucDrop",
                value=test - self._m.estimate_tolerance,
            )
        if estimate is None:
            return
        for name, what in (
            ("roc_auc", "ROC-AUC"),
            ("precision", "precision at the served threshold"),
            ("recall", "recall at the served threshold"),
            ("f1", "F1 at the served threshold"),
        ):
            yield GaugeMetricFamily(
                f"pulse_estimated_{name}",
                f"{what} expected from the drift window's scores, before labels (CBPE; valid while calibrated)",
                value=estimate[name],
            )


def _shadow_families(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    """The shadow model against the served one on the same sampled rows, since it was set (all workers)."""
    shadow = merged_shadow(snapshots)
    if shadow is None:
        return
    info = GaugeMetricFamily("pulse_shadow_info", "The shadow model being compared", labels=["sha256", "version"])
    info.add_metric([shadow["sha256"], shadow["version"]], 1)
    yield info
    yield GaugeMetricFamily("pulse_shadow_sample", "Share of requests the shadow scores", value=shadow["sample"])
    yield CounterMetricFamily("pulse_shadow_rows", "Rows scored by the shadow", value=shadow["rows"])
    yield CounterMetricFamily(
        "pulse_shadow_agreed_rows", "Shadow rows whose decision at the threshold agrees", value=shadow["agreed"]
    )
    yield CounterMetricFamily(
        "pulse_shadow_abs_diff", "Sum over shadow rows of |p_shadow - p_served|", value=shadow["abs_diff"]
    )
    yield CounterMetricFamily("pulse_shadow_errors", "Shadow calls that failed", value=shadow["errors"])
    if shadow["rows"]:
        yield GaugeMetricFamily(
            "pulse_shadow_agreement", "Share of shadow rows whose decision agrees", value=shadow["agreement"]
        )
        yield GaugeMetricFamily(
            "pulse_shadow_mean_abs_diff", "Mean |p_shadow - p_served| over shadow rows", value=shadow["mean_abs_diff"]
        )
        yield GaugeMetricFamily(
            "pulse_shadow_psi", "PSI of the shadow's scores against the served model's, same rows", value=shadow["psi"]
        )
    latency = HistogramMetricFamily("pulse_shadow_compute_seconds", "Shadow onnxruntime time per call")
    counts, total = shadow["latency"]
    latency.add_metric([], Histogram(SHADOW_BUCKETS, counts, total).cumulative(), total)
    yield latency
