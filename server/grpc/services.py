"""The standard gRPC services beside ours: ``grpc.health.v1.Health`` (what Kubernetes' native gRPC probe and service
meshes ask) and server reflection (what ``grpcurl``, Postman and evans discover a service by), from grpc's own
packages (``grpcio-health-checking``, ``grpcio-reflection``).

Health answers for the server (``""``) and for ``inference.GRPCInferenceService``: ``SERVING`` once the model is
served, ``NOT_SERVING`` for good once the worker drains. Reflection describes our service from the same descriptor
the door decodes with (``server.core.v2_grpc``), plus the two standard services', so a client discovers all three.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE, aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

from server.core.v2_grpc import PROTO_FILES

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StandardServices:
    """Health and reflection for one gRPC server whose own service is ``service``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.health = health_aio.HealthServicer()

    def add_to(self, server: grpc.aio.Server, reflection_on: bool) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if reflection_on:
            names = (self.service, HEALTH_SERVICE, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server, pool=_reflection_pool())

    async def serving(self, ready: bool) -> None:
        """Report the service (and the server) as serving or not."""
        status = SERVING if ready else NOT_SERVING
        for name in ("", self.service):
            await self.health.set(name, status)

    async def shutting_down(self) -> None:
        """``NOT_SERVING`` from now on, whatever is set later: the worker drains."""
        await self.health.enter_graceful_shutdown()


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding the descriptors reflection describes: our service's (kept in a pool of its own, see
    ``server.core.v2_grpc``) and the standard services' (in protobuf's default pool)."""
    pool = descriptor_pool.DescriptorPool()
    for file in PROTO_FILES:
        pool.Add(file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    return pool
