"""The cloud's whole-frame OCR for the fleet benchmark: PP-OCRv6 (det_small + rec_small,
``ppocr_v6``) on JPEG frames.

The gateway serves ONNX models, not pipelines with Python steps (detector post-processing,
cropping, CTC decoding), so whole-frame requests go to this process: a 4-byte big-endian length
and the JPEG in, a 4-byte length and ``{"lines": [...], "compute_ms": ...}`` out, one frame at a
time per connection and one frame at a time in the process (one onnxruntime thread: the same
compute budget the gateway's model instances get). ``compute_ms`` is the thread CPU time of the
pipeline.

Run: ``python -m benchmarks.ocr.cloud_ocr --port-file F`` (prints and writes its port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import struct
import time
from pathlib import Path

import cv2
import numpy as np

from common.pipeline import load_pipeline

MAX_FRAME = 8 << 20


async def serve(pipeline_name: str, host: str, port: int, port_file: Path | None) -> None:
    pipeline = load_pipeline(pipeline_name, threads=1)
    gate = asyncio.Semaphore(1)

    def run(jpeg: bytes) -> dict[str, object]:
        c0 = time.thread_time()
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return {"lines": [], "compute_ms": 0.0, "error": "not an image"}
        lines = pipeline(bgr)["lines"]
        return {
            "lines": [
                {
                    "text": ln.text,
                    "confidence": float(ln.confidence),
                    "score": float(ln.score),
                    "box": np.asarray(ln.box, float).tolist(),
                }
                for ln in lines
            ],
            "compute_ms": (time.thread_time() - c0) * 1000,
        }

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                if n > MAX_FRAME:
                    break
                jpeg = await reader.readexactly(n)
                async with gate:
                    doc = await asyncio.to_thread(run, jpeg)
                body = json.dumps(doc).encode()
                writer.write(struct.pack(">I", len(body)) + body)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    bound = int(server.sockets[0].getsockname()[1])
    if port_file is not None:
        port_file.write_text(str(bound))
    print(f"cloud_ocr {pipeline_name} on {host}:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="ppocr_v6")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", type=Path)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.pipeline, args.host, args.port, args.port_file))


if __name__ == "__main__":
    main()
