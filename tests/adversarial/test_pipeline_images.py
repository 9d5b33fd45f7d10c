"""Hostile images against a served pipeline (issue 16): a device with a valid certificate sends
PP-OCRv6's whole-frame pipeline a JPEG whose header declares 30000x30000 pixels (a few hundred
bytes that would decode to 2.7 GB), the same as PNG, an image over the byte limit, and bytes that
are no image. Each is refused from its header, before anything is decoded or queued
(RESOURCE_EXHAUSTED for sizes, INVALID_ARGUMENT for the rest), while a legitimate device's frames
are still computing; over a session stream only the hostile request fails and the same stream
then reads a real frame."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import grpc
import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pbg

from benchmarks.ocr.gateway_frames import lines_from_outputs, pipeline_repository
from common.frames import render_frame
from tests.adversarial._client import next_answer, open_session
from tests.adversarial._served import ROOT, ServedGateway, _ports

MODEL = "ppocr_v6"
MAX_IMAGE_BYTES = 256 * 1024


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A valid 16x16 baseline JPEG whose SOF0 header is rewritten to ``width`` x ``height``."""
    ok, enc = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(enc.tobytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG signature, an IHDR chunk (CRC right) declaring ``width`` x ``height`` RGB and the
    start of an IDAT chunk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = struct.pack(">I", 64) + b"IDAT" + zlib.compress(b"\0" * 4096)[:64]
    return b"\x89PNG\r\n\x1a\n" + chunk + crc + idat


@contextlib.contextmanager
def _serve(tmp: Path, pki: Path) -> Iterator[ServedGateway]:
    models = tmp / "models"
    pipeline_repository(models)
    port_file, log = tmp / "ports.json", tmp / "gateway.log"
    cmd = [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--port", "0",
           "--metrics-port", "0", "--port-file", str(port_file), "--tls-dir", str(pki),
           "--metadata-url", "none"]  # fmt: skip
    env = {
        **os.environ,
        "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",
        "AIML021_GATEWAY_PIPELINES__MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "AIML021_GATEWAY_BATCHING__WORKERS": "1",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while (ports := _ports(port_file)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aiml021 serve did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield ServedGateway(proc, ports["port"], ports["metrics_port"], pki, log)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _request(data: bytes) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="image", datatype="UINT8", shape=[1, len(data)])
    req.raw_input_contents.append(data)
    return req


def _session_header(rid: str, data: bytes) -> session_pb2.ConnectRequest:
    h = session_pb2.InferHeader(
        request_id=rid, model_name=MODEL, total_bytes=len(data), payload=data
    )
    h.encoding.dtype = tensor_pb2.DATA_TYPE_UINT8
    h.encoding.shape.extend([1, len(data)])
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return session_pb2.ConnectRequest(infer_header=h)


@pytest.fixture(scope="module")
def frame_jpeg() -> bytes:
    f = render_frame(0, "hard", "test", 1)
    assert f.format == "jpeg"
    return bytes(f.encoded)


async def test_hostile_images_are_refused_from_their_header_while_frames_compute(
    tmp_path: Path, pki: Path, frame_jpeg: bytes
) -> None:
    attacks = {
        "jpeg 30000x30000": (_jpeg_claiming(30000, 30000), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "jpeg 8000x8000": (_jpeg_claiming(8000, 8000), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "png 30000x30000": (_png_claiming(30000, 30000), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "over the byte limit": (
            frame_jpeg + b"\0" * MAX_IMAGE_BYTES,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        "no image": (b"GIF89a" + os.urandom(2048), grpc.StatusCode.INVALID_ARGUMENT),
        "empty": (b"", grpc.StatusCode.INVALID_ARGUMENT),
    }
    with _serve(tmp_path, pki) as gw:
        async with gw.aio_channel("probe") as legit_ch, gw.aio_channel("attacker") as bad_ch:
            legit, attacker = (
                pbg.GRPCInferenceServiceStub(legit_ch),
                pbg.GRPCInferenceServiceStub(bad_ch),
            )
            await attacker.ModelMetadata(pb.ModelMetadataRequest(name=MODEL), timeout=30)
            # two frames queue on the pipeline (one worker): seconds of compute in flight
            frames = [
                asyncio.ensure_future(legit.ModelInfer(_request(frame_jpeg), timeout=300))
                for _ in range(2)
            ]
            got = {}
            for name, (data, _) in attacks.items():
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await attacker.ModelInfer(_request(data), timeout=30)
                got[name] = (err.value.code(), err.value.details())
            in_flight = not frames[1].done()
            answers = await asyncio.gather(*frames)
            # the session stream: one hostile request fails alone, the stream reads a frame next
            opened = await open_session(
                bad_ch,
                _session_header("bomb", _jpeg_claiming(30000, 30000)),
                _session_header("frame", frame_jpeg),
            )
            assert opened.welcomed, opened.details
            first: Any = await next_answer(opened.call, 300)
            second: Any = await next_answer(opened.call, 300)
            opened.call.cancel()
        assert gw.alive()
    for name, (_, code) in attacks.items():
        assert got[name][0] == code, (name, got[name])
    assert "pipelines.max_image_pixels" in got["jpeg 30000x30000"][1]
    assert "pipelines.max_image_bytes" in got["over the byte limit"][1]
    assert in_flight, "every hostile image was answered while the legitimate frames computed"
    for resp in answers:
        lines = {
            o.name: np.frombuffer(raw, np.uint8)
            for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)
            if o.name == "lines"
        }
        assert len(lines_from_outputs(lines)) >= 5
    assert first.WhichOneof("frame") == "infer_error"
    assert first.infer_error.request_id == "bomb"
    assert first.infer_error.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert second.WhichOneof("frame") == "infer_result"
    out = {t.name: t for t in second.infer_result.outputs}
    assert len(lines_from_outputs({"lines": np.frombuffer(out["lines"].contents, np.uint8)})) >= 5
