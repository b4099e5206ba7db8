"""What grpc.aio can do on one core: the Open Inference Protocol's ``ModelInfer`` answered with a constant
(a serialized ``ModelInferResponse`` built once), bytes in and bytes out, on uvloop as our workers run. The gRPC
door's ceiling: our server adds admission, the pipeline and a model to this."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import numpy as np
import uvloop

from server.core.v2_grpc import SERVICE, ModelInferResponse


def constant_response() -> bytes:
    response: Any = ModelInferResponse(model_name="churn", model_version="constant")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
    response.raw_output_contents.append(np.array([[0.5, 0.5]], dtype="<f4").tobytes())
    return bytes(response.SerializeToString())


async def serve(port: int) -> None:
    answer = constant_response()

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    server = grpc.aio.server()
    handlers = {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
