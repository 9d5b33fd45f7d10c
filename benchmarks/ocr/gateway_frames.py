"""Whole frames through our gateway: the cloud's PP-OCRv6 det+rec served as a pipeline model.

The gateway serves a ``pipeline.json`` directory (``cloud.core._pipeline_model``) as a model
whose input is the encoded image (``UINT8 [1, bytes]``) and whose ``lines`` output is UTF-8 JSON;
:class:`GatewayFrameOcr` sends a frame's JPEG over the device's own session stream (the same
stream its line regions take), so cloud-only goes through the gateway like every other offload.
It is a :data:`benchmarks.ocr.app.FrameOcr`: ``await ocr(jpeg) -> (lines, compute ms)``, the
compute being the pipeline's CPU time for the frame (its ``cpu_ms`` output).

:func:`pipeline_repository` adds the pipeline model (``ppocr_v6``) to a models directory.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from common.pipeline import Line

FRAME_MODEL = "ppocr_v6"
"""Name the gateway serves the whole-frame pipeline under."""


def pipeline_repository(models: Path, pipeline: str = "ppocr_v6", name: str = FRAME_MODEL) -> Path:
    """``models/<name>/pipeline.json`` extending the built-in ``pipeline`` (its models are read
    from the installed wheels); returns the directory."""
    root = models / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.json").write_text(json.dumps({"extends": pipeline}) + "\n")
    return root


def image_features(data: bytes) -> Any:
    """An encoded image as a session payload: a ``raw`` codec frame of ``UINT8 [1, bytes]``."""
    import common.codecs as codecs
    from edge_agent._features import EncodedFeatures

    frame = codecs.encode(np.frombuffer(data, np.uint8)[None], "raw")
    header = codecs.peek_header(frame)
    return EncodedFeatures(
        payload=bytes(frame),
        codec=str(header.spec),
        dtype=str(header.dtype),
        shape=tuple(int(d) for d in header.shape),
        original_bytes=int(header.original_bytes),
        crc32c=int(header.crc32c),
    )


def lines_from_outputs(outputs: dict[str, np.ndarray]) -> list[Line]:
    """The ``lines`` output of the pipeline model as :class:`common.pipeline.Line` values."""
    doc = json.loads(np.asarray(outputs["lines"], np.uint8).tobytes() or b"[]")
    return [Line(d["text"], float(d["confidence"]), float(d["score"]), d["box"]) for d in doc]


class GatewayFrameOcr:
    """Whole frames over a device's ``edge_agent.SessionClient`` to the pipeline model."""

    def __init__(self, client: Any, model: str = FRAME_MODEL, deadline_s: float = 600.0) -> None:
        # a long deadline, like the whole-frame service's connection (none): on a host at load
        # average 20 a frame's compute alone took 7 s of wall time and 60 s ran out in the queue
        self.client, self.model, self.deadline_s = client, model, deadline_s
        self._prefix = uuid.uuid4().hex[:10]
        self._seq = 0

    async def __call__(self, jpeg: bytes) -> tuple[list[Line], float]:
        from edge_agent._convert import OutboundRequest

        features = image_features(jpeg)
        self._seq += 1
        rid = f"frame-{self._prefix}-{self._seq}"
        answer = await self.client.submit(
            OutboundRequest(
                request_id=rid,
                idempotency_key=rid,
                model_name=self.model,
                model_version="",
                cut_point="",
                features=features,
                deadline=time.time() + self.deadline_s,
                digest=hashlib.sha256(features.payload).digest(),
            )
        )
        # the pipeline's own CPU time, as cloud_ocr.py reports it (the batch's wall time,
        # cloud_compute_ms, also counts the host's other processes)
        cpu = answer.outputs.get("cpu_ms")
        ms = float(cpu.reshape(-1)[0]) if cpu is not None else float(answer.cloud_compute_ms)
        return lines_from_outputs(answer.outputs), ms

    async def close(self) -> None:
        """Nothing of its own to close (the session belongs to the device)."""


__all__ = [
    "FRAME_MODEL",
    "GatewayFrameOcr",
    "image_features",
    "lines_from_outputs",
    "pipeline_repository",
]
