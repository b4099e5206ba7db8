"""OTLP/gRPC: the tracer's spans sent to ``opentelemetry.proto.collector.trace.v1.TraceService/Export``, bytes in
and out (the message is :mod:`server.monitoring.otlp`'s to write); kept with the other gRPC code, as grpc is not the
monitoring layer's to import."""

from __future__ import annotations

import grpc

from server.monitoring.tracing import TraceConfig, export_body

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class GrpcSender:
    """One channel to the collector (TLS for an ``https://`` endpoint); each call sends one batch."""

    def __init__(self, config: TraceConfig) -> None:
        self.config = config
        target = config.endpoint.split("://", 1)[-1]
        secure = config.endpoint.startswith("https://")
        channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure else grpc.insecure_channel(target)
        )
        self._export = channel.unary_unary(EXPORT_METHOD)

    def __call__(self, batch: list[bytes]) -> None:
        metadata = tuple((key.lower(), value) for key, value in self.config.headers.items())
        timeout = min(self.config.timeout, self.config.export_timeout)
        self._export(export_body(self.config, batch), timeout=timeout, metadata=metadata)
