"""A pipeline with Python steps served as a model (issue 16): PP-OCRv6 det_small + rec_small with
DB post-processing, crops, CTC and calibration between its ONNX stages, from a models-directory
entry holding only ``pipeline.json``, answers a JPEG frame over ModelInfer (UINT8 and KServe
BYTES), KServe-v2 REST (binary extension) and a device's session stream exactly as the pipeline
does on its own."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import grpc
import httpx
import numpy as np
import pytest
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pbg

from benchmarks.ocr.gateway_frames import GatewayFrameOcr, lines_from_outputs, pipeline_repository
from cloud import Gateway
from cloud._settings import GatewaySettings
from common.frames import render_frame
from common.pipeline import Line, load_pipeline
from common.settings import nest
from edge_agent import EdgeSettings, SessionClient

MODEL = "ppocr_v6"


@pytest.fixture(scope="module")
def frame():  # type: ignore[no-untyped-def]
    f = render_frame(0, "hard", "test", 1)
    assert f.format == "jpeg"
    return f


@pytest.fixture(scope="module")
def expected(frame):  # type: ignore[no-untyped-def]
    """The pipeline's own reading of the frame (the whole-frame service's answer)."""
    bgr = cv2.imdecode(np.frombuffer(frame.encoded, np.uint8), cv2.IMREAD_COLOR)
    lines = load_pipeline(MODEL)(bgr)["lines"]
    assert len(lines) >= 5
    return [(ln.text, [[round(v) for v in p] for p in ln.box]) for ln in lines]


def _read(lines) -> list[tuple[str, list[list[int]]]]:  # type: ignore[no-untyped-def]
    return [(ln.text, [[round(v) for v in p] for p in ln.box]) for ln in lines]


def _settings(tmp_path: Path) -> GatewaySettings:
    pipeline_repository(tmp_path / "models")
    return GatewaySettings(
        **nest(
            {
                "models_dir": tmp_path / "models",
                "server.port": 0,
                "rest.port": 0,
                "metrics.port": None,
                "tls.insecure": True,
                "cache.full_models": False,
            }
        )
    )


def _outputs(resp: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    dt = {"UINT8": np.uint8, "FP32": np.float32}
    return {
        o.name: np.frombuffer(raw, dt[o.datatype]).reshape(list(o.shape))
        for o, raw in zip(resp.outputs, resp.raw_output_contents, strict=True)
    }


async def test_a_pipeline_directory_is_served_over_every_api(tmp_path, frame, expected) -> None:  # type: ignore[no-untyped-def]
    jpeg = frame.encoded
    async with Gateway(_settings(tmp_path)) as gw:
        target = f"127.0.0.1:{gw.port}"
        async with grpc.aio.insecure_channel(target) as ch:
            stub = pbg.GRPCInferenceServiceStub(ch)
            meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
            assert meta.platform == "aiml021_pipeline" and list(meta.versions) == ["1"]
            assert [(t.name, t.datatype) for t in meta.inputs] == [("image", "UINT8")]
            # the encoded image as UINT8 [1, bytes]
            req = pb.ModelInferRequest(model_name=MODEL)
            req.inputs.add(name="image", datatype="UINT8", shape=[1, len(jpeg)])
            req.raw_input_contents.append(jpeg)
            uint8 = _outputs(await stub.ModelInfer(req))
            # ... and as a KServe BYTES tensor of one element (what tritonclient sends)
            req = pb.ModelInferRequest(model_name=MODEL)
            req.inputs.add(name="image", datatype="BYTES", shape=[1])
            req.raw_input_contents.append(struct.pack("<I", len(jpeg)) + jpeg)
            req.outputs.add(name="lines")
            by_bytes = _outputs(await stub.ModelInfer(req))
            # ... and on ModelStreamInfer
            call = stub.ModelStreamInfer()
            await call.write(req)
            streamed = await call.read()
            await call.done_writing()
            assert not streamed.error_message, streamed.error_message
            by_stream = _outputs(streamed.infer_response)
        # REST, KServe-v2 binary extension
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(jpeg) + 4},
                    }
                ],
                "outputs": [{"name": "lines", "parameters": {"binary_data": False}}],
            }
        ).encode()
        async with httpx.AsyncClient(timeout=120) as http:
            r = await http.post(
                f"http://127.0.0.1:{gw.rest_port}/v2/models/{MODEL}/infer",
                content=head + struct.pack("<I", len(jpeg)) + jpeg,
                headers={"Inference-Header-Content-Length": str(len(head))},
            )
        assert r.status_code == 200, r.text
        rest = r.json()["outputs"][0]
        rest_lines = np.asarray(rest["data"], np.uint8).reshape(rest["shape"])
        # tritonclient, unchanged (a child process: it cannot share one with our stubs)
        (tmp_path / "frame.jpg").write_bytes(jpeg)
        arg = {"url": target, "model": MODEL, "jpeg": str(tmp_path / "frame.jpg")}
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("_tc_pipeline.py")), json.dumps(arg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await child.communicate()
        assert child.returncode == 0, err.decode()[-2000:]
        # the device's session stream
        edge = EdgeSettings(**nest({"gateway": target, "tls.insecure": True}))
        async with SessionClient(target, edge) as client:
            assert await client.wait_connected(10)
            session_lines, compute_ms = await GatewayFrameOcr(client)(jpeg)
    assert compute_ms > 0
    assert _read(lines_from_outputs(uint8)) == expected
    n = len(expected)
    assert uint8["boxes"].shape == (1, n, 4, 2) and uint8["confidence"].shape == (1, n)
    assert uint8["cpu_ms"].shape == (1, 1) and uint8["cpu_ms"][0, 0] > 0
    texts = [bytes(row).rstrip(b"\0").decode() for row in uint8["text"][0]]
    assert texts == [t for t, _ in expected]
    assert set(by_bytes) == {"lines"} and _read(lines_from_outputs(by_bytes)) == expected
    assert _read(lines_from_outputs(by_stream)) == expected
    assert _read(lines_from_outputs({"lines": rest_lines})) == expected
    assert _read(session_lines) == expected
    tc_lines = [Line(d["text"], d["confidence"], d["score"], d["box"]) for d in json.loads(out)]
    assert _read(tc_lines) == expected


async def test_a_broken_pipeline_directory_is_skipped_with_its_reason(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    pipeline_repository(tmp_path / "models")
    bad = tmp_path / "models" / "broken"
    bad.mkdir()
    (bad / "pipeline.json").write_text(json.dumps({"extends": "ppocr_v6", "input": "frame"}))
    from cloud.core import scan_models_dir

    specs = scan_models_dir(tmp_path / "models", 8)
    assert [s.name for s in specs] == [MODEL]
    assert specs[0].pipeline is not None and specs[0].max_batch_size == 1
    assert "cannot serve" in caplog.text and "broken" in caplog.text and "reads" in caplog.text


def test_triton_serves_the_same_pipeline_as_a_python_backend_model(frame, expected) -> None:  # type: ignore[no-untyped-def]
    """The cloud-only peer: a real Triton (PyTriton's tritonserver) running the same pipeline as
    one python-backend model, reached over KServe-v2 HTTP with a BYTES input."""
    from benchmarks.ocr.triton_frames import TritonPipelineServer, infer_body, parse_answer

    with TritonPipelineServer() as triton:
        body, headers = infer_body(bytes(frame.encoded))
        r = httpx.post(
            f"http://127.0.0.1:{triton.http_port}/v2/models/{MODEL}/infer",
            content=body,
            headers=headers,
            timeout=300,
        )
    assert r.status_code == 200, r.text[:500]
    lines, cpu_ms = parse_answer(r.content, int(r.headers["Inference-Header-Content-Length"]))
    assert cpu_ms > 0
    assert _read(lines) == expected


async def test_a_pipeline_loads_without_parsing_its_onnx_files_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PP-OCRv6's stage files took up to 50 ms each to parse, twice, on the loop serving everyone.
    import onnx

    parsed: list[tuple[str, bool]] = []  # (file, parsed on the event loop's thread)
    parse = onnx.load

    def spy(f: Any, *args: Any, **kw: Any) -> Any:
        parsed.append((Path(str(f)).name, threading.current_thread() is threading.main_thread()))
        return parse(f, *args, **kw)

    monkeypatch.setattr(onnx, "load", spy)
    async with Gateway(_settings(tmp_path)) as gw:
        assert await gw.dataplane.backend.ready()
    base = load_pipeline(MODEL)
    stages = {base.model_path(name).name for name in base.spec.models}
    assert stages <= {name for name, _ in parsed}
    assert [name for name, on_loop in parsed if on_loop and name in stages] == []
