"""What grpc.aio can do on one core: the Open Inference Protocol's ``ModelInfer`` answered with a constant, bytes in
and bytes out, on uvloop as our workers run. Each kind of request gets a constant answer of its own size (a
serialized ``ModelInferResponse`` with one probability pair per row, built the first time a request of that size
comes): the gRPC door's ceiling at each batch size. Our server adds admission, the pipeline and a model to this."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import numpy as np
import uvloop

from server.core.v2_grpc import SERVICE, ModelInferRequest, ModelInferResponse


def constant_response(rows: int = 1) -> bytes:
    response: Any = ModelInferResponse(model_name="churn", model_version="constant")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[rows, 2])
    response.raw_output_contents.append(np.full((rows, 2), 0.5, dtype="<f4").tobytes())
    return bytes(response.SerializeToString())


async def serve(port: int) -> None:
    answers: dict[int, bytes] = {}  # by request size: the harness sends a few sizes, each many times

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        answer = answers.get(len(request))
        if answer is None:
            message: Any = ModelInferRequest.FromString(request)
            answer = answers[len(request)] = constant_response(message.inputs[0].shape[0])
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
