"""Launcher of a real Triton Inference Server (nvidia-pytriton) serving ONNX segments.

Run with the Triton venv's interpreter, never imported by the gateway (it needs numpy<2)::

    LD_LIBRARY_PATH=$(.venv-triton/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))') \\
        .venv-triton/bin/python scripts/triton/server.py --config triton.json

The config (written by ``scripts.triton.launch``) names the ports and, for each model, the
Triton name and version, the ONNX file, its tensors and the dynamic-batching limits. Each model is
an onnxruntime session bound as a PyTriton model; Triton's dynamic batcher groups requests.
Without LD_LIBRARY_PATH pointing at the interpreter's libdir (pyenv builds), Triton's python
backend fails with an RLock ``_recursion_count`` error.

This file is standalone: it imports nothing from this repository.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

log = logging.getLogger("triton_server")


def _make_infer(
    path: str, outputs: list[str], threads: int
) -> Callable[..., dict[str, np.ndarray]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = session.run(outputs, inputs)
        return dict(zip(outputs, results, strict=True))

    return infer


def _tensor(spec: dict[str, Any]) -> Tensor:
    # PyTriton shapes exclude the batch dimension when max_batch_size > 0.
    return Tensor(
        name=spec["name"], dtype=np.dtype(spec["dtype"]).type, shape=tuple(spec["shape"][1:])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", required=True, help="JSON file written by scripts/triton/launch.py"
    )
    args = parser.parse_args(argv)
    with open(args.config) as f:
        cfg = json.load(f)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = TritonConfig(
        grpc_port=cfg["grpc_port"],
        http_port=cfg["http_port"],
        metrics_port=cfg["metrics_port"],
        log_verbose=0,
        exit_on_error=True,
    )
    security = None
    if cfg.get("restricted_endpoints") is not None:  # [] opens statistics, repository... to all
        security = TritonSecurityConfig(restricted_endpoints=list(cfg["restricted_endpoints"]))
    with Triton(config=config, security_config=security) as triton:
        for m in cfg["models"]:
            triton.bind(
                model_name=m["triton_name"],
                model_version=int(m["triton_version"]),
                infer_func=_make_infer(
                    m["onnx_path"], [o["name"] for o in m["outputs"]], int(m.get("threads", 1))
                ),
                inputs=[_tensor(t) for t in m["inputs"]],
                outputs=[_tensor(t) for t in m["outputs"]],
                config=ModelConfig(
                    max_batch_size=int(m["max_batch_size"]),
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=int(m.get("max_queue_delay_us", 500))
                    ),
                ),
                strict=False,
            )
            log.info(
                "bound %s version %s from %s", m["triton_name"], m["triton_version"], m["onnx_path"]
            )
        triton.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
