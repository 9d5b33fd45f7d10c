"""KServe's Python model server (``kserve`` from PyPI) serving an ONNX model with onnxruntime.

    python kserve_server.py MODEL.onnx NAME GRPC_PORT HTTP_PORT

Run by benchmarks/capacity/run.py with a kserve virtual environment's interpreter (this file
imports nothing of the project).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True

    async def predict(
        self, payload: InferRequest, headers: Any = None, response_headers: Any = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32, copy=False)
        (y,) = self.session.run([self.output_name], {self.input_name: x})
        out = InferOutput(name=self.output_name, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y)
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id)


if __name__ == "__main__":
    path, name, grpc_port, http_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    server = ModelServer(
        grpc_port=grpc_port, http_port=http_port, workers=1, enable_latency_logging=False
    )
    server.start([OnnxModel(name, path)])
