"""An MLServer runtime (``mlserver`` from PyPI) serving an ONNX model with onnxruntime: MLServer
ships no ONNX runtime of its own (there is no ``mlserver-onnx`` package), so this is the custom
runtime a user would write. benchmarks/capacity/run.py writes the settings and starts
``mlserver start`` with it on the path."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        uri = self.settings.parameters.uri
        self.session = ort.InferenceSession(uri, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        (y,) = self.session.run([self.output_name], {self.input_name: x})
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(self.output_name, y)]
        )
