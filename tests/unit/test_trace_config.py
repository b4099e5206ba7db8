"""Tracing's configuration from the standard ``OTEL_*`` variables, W3C ``traceparent`` parsing, and the sampling
decision each of the spec's samplers makes (before any span exists)."""

from __future__ import annotations

import pytest

from server.monitoring.tracing import TraceConfig, Tracer, TracingConfigError, parse_traceparent

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_off_unless_an_otel_variable_turns_it_on() -> None:
    assert TraceConfig.from_env({}) is None
    assert TraceConfig.from_env({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) is None
    assert TraceConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}) is None
    assert (
        TraceConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}) is None
    )


def test_the_spec_defaults_and_endpoints() -> None:
    config = TraceConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert config is not None
    assert (config.exporter, config.protocol, config.endpoint) == (
        "otlp",
        "http/protobuf",
        "http://collector:4318/v1/traces",
    )
    assert (config.sampler, config.ratio) == ("parentbased_traceidratio", 1.0)
    assert (config.max_queue, config.max_batch, config.schedule_delay, config.export_timeout) == (2048, 512, 5.0, 30.0)
    assert config.resource == {"service.name": "ml-pulsechecker"}
    grpc = TraceConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc is not None and grpc.endpoint == "http://localhost:4317"
    signal = TraceConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/custom"})
    assert signal is not None and signal.endpoint == "http://c:9/custom"  # a signal's own endpoint is used as it is
    described = TraceConfig.from_env(
        {
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "churn",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored, deployment.environment=prod,team=a%2Cb",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=secret",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    assert described is not None
    assert described.resource == {"service.name": "churn", "deployment.environment": "prod", "team": "a,b"}
    assert described.headers == {"api-key": "secret"} and described.ratio == 0.25 and described.schedule_delay == 0.2


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER='jaeger'"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER='sometimes'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG='2'",
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_BSP_MAX_QUEUE_SIZE": "many"}, "OTEL_BSP_MAX_QUEUE_SIZE='many'"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    ],
)
def test_a_bad_variable_is_named(variables: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError, match=named.replace("(", r"\(")):
        TraceConfig.from_env(variables)


def test_traceparent_as_w3c_trace_context_reads_it() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-01".encode()) == (bytes.fromhex(TRACE), bytes.fromhex(SPAN), True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00".encode())[2] is False  # type: ignore[index]
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-01-what-comes-next".encode()) is not None  # a later version
    for bad in (
        None,
        b"",
        f"00-{TRACE}-{SPAN}-01-extra".encode(),  # version 00 has exactly four fields
        f"ff-{TRACE}-{SPAN}-01".encode(),  # version ff is invalid
        f"00-{TRACE.upper()}-{SPAN}-01".encode(),  # lowercase hex only
        f"00-{'0' * 32}-{SPAN}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
        f"00-{TRACE[:-1]}-{SPAN}-01".encode(),
        f"00_{TRACE}_{SPAN}_01".encode(),
    ):
        assert parse_traceparent(bad) is None, bad


def _tracer(sampler: str, ratio: str = "1") -> Tracer:
    config = TraceConfig.from_env(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": ratio}
    )
    assert config is not None
    return Tracer(config)


def test_each_sampler_decides_as_the_spec_says() -> None:
    sampled, unsampled = f"00-{TRACE}-{SPAN}-01".encode(), f"00-{TRACE}-{SPAN}-00".encode()
    parent_based = _tracer("parentbased_traceidratio", "0")
    trace = parent_based.decide(sampled, b"vendor=x")
    assert trace is not None and trace.trace_id.hex() == TRACE and trace.parent_id.hex() == SPAN
    assert trace.span_id != bytes.fromhex(SPAN) and len(trace.span_id) == 8 and trace.tracestate == "vendor=x"
    assert parent_based.decide(unsampled) is None  # the caller's decision holds
    assert parent_based.decide(None) is None  # a root at ratio 0
    assert _tracer("parentbased_always_on").decide(unsampled) is None
    assert _tracer("parentbased_always_off").decide(None) is None
    assert _tracer("always_on").decide(unsampled) is not None  # not parent-based: the parent's flag is ignored
    assert _tracer("always_off").decide(sampled) is None
    roots = [_tracer("parentbased_always_on").decide(None) for _ in range(50)]
    assert all(root is not None and root.parent_id == b"" for root in roots)
    assert len({root.trace_id for root in roots if root is not None}) == 50


def test_the_ratio_sampler_keeps_about_its_share_and_decides_by_trace_id() -> None:
    tracer = _tracer("traceidratio", "0.25")
    kept = sum(tracer.decide(None) is not None for _ in range(20_000))
    assert abs(kept - 5_000) < 5 * (20_000 * 0.25 * 0.75) ** 0.5  # 5 sigma of a binomial
    low = f"00-{'0' * 16}{'0' * 15}1-{SPAN}-01".encode()  # the low 8 bytes decide: 1 < 0.25 * 2^64
    high = f"00-{'0' * 16}{'f' * 16}-{SPAN}-01".encode()
    assert tracer.decide(low) is not None and tracer.decide(high) is None
