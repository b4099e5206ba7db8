"""The gRPC door in process, through grpc's own clients on a real port: the standard health service, server
reflection as grpcurl uses it (the service discovered, a request built from the reflected descriptor and answered),
and errors as the statuses a gRPC client branches on, never a traceback."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from starlette.testclient import TestClient

from benchmarks.grpc_hostile import INFER_PATH
from benchmarks.procs import free_port
from common.model.loader import load_model
from server.config.settings import Settings
from server.core.v2_grpc import ModelInferRequest, message_class
from server.grpc import door as door_module
from server.http.app import create_app
from server.pipeline import infer as infer_module

pytestmark = pytest.mark.http

SERVICE = "inference.GRPCInferenceService"


def _serve(settings: Settings, **changes: Any) -> Iterator[grpc.Channel]:
    port = free_port()
    with (
        TestClient(create_app(dataclasses.replace(settings, grpc_port=port, **changes))),
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield channel


@pytest.fixture(scope="module")
def channel(settings: Settings) -> Iterator[grpc.Channel]:
    yield from _serve(settings)


@pytest.fixture(scope="module")
def width(settings: Settings) -> int:
    """The served model's feature count."""
    return len(load_model(settings.model_path).info.features)


def _request(rows: int, features: int) -> bytes:
    request: Any = ModelInferRequest(model_name="churn")
    request.inputs.add(name="features", datatype="FP32", shape=[rows, features])
    request.raw_input_contents.append(np.full((rows, features), 2.0, dtype="<f4").tobytes())
    return bytes(request.SerializeToString())


def _error(channel: grpc.Channel, body: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(INFER_PATH)(body, timeout=10)
    return caught.value.code(), caught.value.details()


def test_health_reports_the_server_and_the_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service_well_enough_to_call_it(channel: grpc.Channel, width: int) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    assert {SERVICE, "grpc.health.v1.Health"} <= set(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName(SERVICE).FindMethodByName("ModelInfer")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = request_class(model_name="churn")  # built only from what reflection said, as grpcurl does
    request.inputs.add(name="features", datatype="FP32", shape=[1, width])
    request.raw_input_contents.append(np.full((1, width), 2.0, dtype="<f4").tobytes())
    call = channel.unary_unary(
        f"/{SERVICE}/ModelInfer",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(request, timeout=10)
    assert response.model_name == "churn" and response.outputs[0].shape == [1, 2]
    assert 0 <= np.frombuffer(response.raw_output_contents[0], dtype="<f4")[1] <= 1


def test_reflection_can_be_turned_off(settings: Settings) -> None:
    for channel in _serve(settings, grpc_reflection=False):
        with pytest.raises(grpc.RpcError) as caught:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_bad_messages_are_invalid_argument_naming_the_fault(channel: grpc.Channel, width: int) -> None:
    assert _error(channel, b"\xff\xff garbage") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a ModelInferRequest message",
    )
    code, details = _error(channel, _request(1, width + 1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shape" in details


def test_a_batch_over_the_limit_is_resource_exhausted(channel: grpc.Channel, settings: Settings, width: int) -> None:
    code, details = _error(channel, _request(settings.max_batch + 1, width))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"limit of {settings.max_batch}" in details


def test_an_unexpected_failure_is_a_generic_internal_with_the_cause_in_the_log(
    channel: grpc.Channel, width: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal detail that must not reach a client")

    monkeypatch.setattr(infer_module, "render_infer", broken)
    with caplog.at_level(logging.ERROR):
        assert _error(channel, _request(1, width)) == (grpc.StatusCode.INTERNAL, "Internal Server Error")
    assert "internal detail that must not reach a client" in caplog.text  # the cause, for the operator only


def test_an_unexpected_failure_of_another_call_is_a_generic_internal_too(
    channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("internal detail that must not reach a client")

    monkeypatch.setattr(door_module, "model_metadata", broken)
    request = message_class("ModelMetadataRequest")(name="churn").SerializeToString()
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/ModelMetadata")(request, timeout=10)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INTERNAL, "Internal Server Error")
    assert "internal detail that must not reach a client" in caplog.text
