"""Launcher of a real Triton Inference Server (nvidia-pytriton) serving a ``common.pipeline``
description (e.g. PP-OCRv6 det+rec with its Python steps) as one python-backend model: the peer
of the gateway's pipeline models (``cloud.backends.PipelineBackend``).

Run with the Triton venv's interpreter and the repository on ``PYTHONPATH`` (the pipeline's steps
are this repository's code; the venv needs ``opencv-python-headless``, ``pyclipper`` and ``onnx``,
which ``scripts/setup_triton.sh`` installs)::

    PYTHONPATH=. LD_LIBRARY_PATH=... .venv-triton/bin/python scripts/triton/pipeline_server.py \\
        --config triton_pipeline.json

The config names the ports, the model name and the description (whose model files are absolute
paths: the Triton venv does not hold the wheels they ship in). The model takes ``image``, the
encoded image as a BYTES tensor of one element, and answers ``lines`` (UTF-8 JSON, BYTES) and
``cpu_ms`` (the image's thread CPU time), one image per request like the gateway's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import cv2
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from common.pipeline import load_pipeline

log = logging.getLogger("triton_pipeline_server")


def _make_infer(description: str) -> Any:
    pipeline = load_pipeline(description, threads=1)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        lines, cpu = [], []
        for row in image:  # one encoded image per row
            start = time.thread_time()
            data = row[0] if isinstance(row[0], bytes) else bytes(row[0])
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            found = [] if bgr is None else pipeline(bgr)["lines"]
            doc = [ln.to_json() for ln in found]
            lines.append([json.dumps(doc, default=float).encode()])
            cpu.append([(time.thread_time() - start) * 1000])
        return {"lines": np.array(lines, dtype=np.bytes_), "cpu_ms": np.array(cpu, np.float32)}

    return infer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
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
    with Triton(config=config) as triton:
        triton.bind(
            model_name=cfg["model"],
            infer_func=_make_infer(cfg["description"]),
            inputs=[Tensor(name="image", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="lines", dtype=np.bytes_, shape=(1,)),
                Tensor(name="cpu_ms", dtype=np.float32, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=1, batcher=DynamicBatcher()),
            strict=False,
        )
        log.info("bound %s from %s", cfg["model"], cfg["description"])
        triton.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
