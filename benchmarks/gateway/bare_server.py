"""The overhead floor: a bare grpc.aio KServe-v2 server that only runs onnxruntime.

No auth, batching, validation beyond what decoding needs, or metrics: ModelInfer and
ModelStreamInfer decode raw_input_contents, run the session inline on the event loop and answer.

    python -m benchmarks.gateway.bare_server --model full.onnx --name tiny_cnn --port-file p.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc


class BareServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, model: Path, name: str) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.name = name
        self.input = self.sess.get_inputs()[0].name
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def _run(self, req: pb.ModelInferRequest) -> pb.ModelInferResponse:
        t = req.inputs[0]
        x = np.frombuffer(req.raw_input_contents[0], np.float32).reshape(list(t.shape))
        ys = self.sess.run(self.outputs, {self.input: x})
        resp = pb.ModelInferResponse(model_name=self.name, model_version="1", id=req.id)
        for n, y in zip(self.outputs, ys, strict=True):
            resp.outputs.add(name=n, datatype="FP32", shape=y.shape)
            resp.raw_output_contents.append(y.tobytes())
        return resp

    async def ServerReady(self, request: object, context: object) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: object
    ) -> pb.ModelInferResponse:
        return self._run(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: object
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for req in request_iterator:
            yield pb.ModelStreamInferResponse(infer_response=self._run(req))


async def serve(model: Path, name: str, port: int, port_file: Path | None) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareServicer(model, name), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    if port_file is not None:
        port_file.write_text(json.dumps({"port": bound}))
    await server.wait_for_termination()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--name", default="model")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", type=Path)
    a = ap.parse_args()
    asyncio.run(serve(a.model, a.name, a.port, a.port_file))


if __name__ == "__main__":
    main()
