"""Request metrics kept in plain Python numbers and exposed in Prometheus text format at scrape time.

Recording a request is a few additions and a bisect, with no locks: each worker process has one event loop
thread. The Prometheus client only runs when ``/metrics`` is scraped (figures are per worker process).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMPUTE_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025, 0.1)


class Histogram:
    """Cumulative-on-read histogram: ``observe`` bumps one bucket."""

    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Metrics:
    """The server's figures. ``info`` is filled once the model is loaded."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.latency: defaultdict[str, Histogram] = defaultdict(lambda: Histogram(LATENCY_BUCKETS))
        self.compute = Histogram(COMPUTE_BUCKETS)
        self.rows = 0
        self.in_flight = 0
        self.pid = os.getpid()
        self.info: dict[str, str] = {}
        self.log_counters: Callable[[], dict[str, int]] = dict

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        self.latency[route].observe(seconds)

    def observe_compute(self, seconds: float, rows: int) -> None:
        self.compute.observe(seconds)
        self.rows += rows

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        requests = CounterMetricFamily(
            "pulse_http_requests", "HTTP requests by route and status", labels=["route", "status"]
        )
        for (route, status), count in sorted(m.requests.items()):
            requests.add_metric([route, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "pulse_http_request_duration_seconds", "Time from request start to response sent", labels=["route"]
        )
        for route, hist in sorted(m.latency.items()):
            latency.add_metric([route], hist.cumulative(), hist.total)
        yield latency
        compute = HistogramMetricFamily("pulse_model_compute_seconds", "onnxruntime time per call")
        compute.add_metric([], m.compute.cumulative(), m.compute.total)
        yield compute
        yield CounterMetricFamily("pulse_predicted_rows", "Rows scored", value=m.rows)
        yield GaugeMetricFamily("pulse_http_requests_in_flight", "Requests being handled", value=m.in_flight)
        worker = GaugeMetricFamily("pulse_worker", "The worker process that answered this scrape", labels=["pid"])
        worker.add_metric([str(m.pid)], 1)
        yield worker
        if m.info:
            info = GaugeMetricFamily("pulse_model_info", "The loaded model", labels=sorted(m.info))
            info.add_metric([m.info[k] for k in sorted(m.info)], 1)
            yield info
        for name, value in m.log_counters().items():
            yield CounterMetricFamily(f"pulse_request_log_{name}", f"Request log lines {name}", value=value)
