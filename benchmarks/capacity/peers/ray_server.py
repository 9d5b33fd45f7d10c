"""Ray Serve (``ray[serve]`` from PyPI) serving an ONNX model with onnxruntime behind Ray Serve's
gRPC proxy, registered with the KServe v2 service (``inference.GRPCInferenceService``, the
project's generated code on PYTHONPATH) so that the same tritonclient load generator drives it.

    python ray_server.py MODEL.onnx NAME GRPC_PORT HTTP_PORT

Run by benchmarks/capacity/run.py with a Ray virtual environment's interpreter. That venv needs
the protobuf runtime the generated code was made for: ``pip install 'ray[serve]==2.60.0'
onnxruntime 'protobuf==6.33.5' 'grpcio-reflection==1.81.1' 'grpcio-health-checking==1.81.1'``.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import onnxruntime as ort
import ray
from inference import grpc_service_pb2 as pb
from ray import serve
from ray.serve.config import gRPCOptions


@serve.deployment(max_ongoing_requests=128)
class OnnxModel:
    def __init__(self, path: str, name: str) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.name = name

    def ModelInfer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        shape = list(request.inputs[0].shape)
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
        (y,) = self.session.run([self.output_name], {self.input_name: x})
        resp = pb.ModelInferResponse(model_name=self.name, id=request.id)
        resp.outputs.add(name=self.output_name, datatype="FP32", shape=list(y.shape))
        resp.raw_output_contents.append(np.ascontiguousarray(y, np.float32).tobytes())
        return resp

    def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == self.name)


if __name__ == "__main__":
    path, name, grpc_port, http_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(
        http_options={"host": "127.0.0.1", "port": http_port},
        grpc_options=gRPCOptions(
            port=grpc_port,
            grpc_servicer_functions=[
                "inference.grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"
            ],
        ),
    )
    app = OnnxModel.bind(path, name)  # type: ignore[attr-defined]
    serve.run(app, name=name, route_prefix=f"/{name}")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    serve.shutdown()
    ray.shutdown()
