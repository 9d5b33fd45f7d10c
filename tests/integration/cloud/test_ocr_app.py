"""The OCR application (issue 16) against the real gateway: PP-OCRv4 on the device, doubtful
lines' gray regions to PP-OCRv6 served from a Triton-layout repository, whole frames to the
cloud's det+rec service, and lines deferred while the link is down refined exactly once when it
returns."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time

import pytest

from benchmarks.ocr import cloud_ocr
from benchmarks.ocr.app import FrameClient, OcrApp, Policy, score
from benchmarks.ocr.fleet import model_repository
from cloud import Gateway
from cloud._settings import GatewaySettings
from common.frames import frame_record, render_frame
from common.settings import nest
from edge_agent import EdgeSettings, SessionClient
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def frame():  # type: ignore[no-untyped-def]
    f = render_frame(0, "hard", "test", 1)
    assert f.format == "jpeg"
    return f


@contextlib.asynccontextmanager
async def gateway(tmp_path):  # type: ignore[no-untyped-def]
    settings = GatewaySettings(
        **nest(
            {
                "models_dir": model_repository(tmp_path),
                "server.port": 0,
                "metrics.port": None,
                "tls.insecure": True,
                "cache.full_models": False,
            }
        )
    )
    async with Gateway(settings) as gw:
        target = f"127.0.0.1:{gw.port}"
        edge = EdgeSettings(**nest({"gateway": target, "tls.insecure": True}))
        async with SessionClient(target, edge) as client:
            assert await client.wait_connected(10)
            yield gw, client


async def test_hybrid_reads_doubtful_lines_in_the_cloud(tmp_path, frame) -> None:  # type: ignore[no-untyped-def]
    truth = frame_record(frame, "x.jpg")["lines"]
    async with gateway(tmp_path) as (_, client):
        hybrid = OcrApp("hybrid", 1.0, Policy(), client=client)
        res = await hybrid.read(frame.id, frame.encoded, 0.0)
        edge = await OcrApp("edge", 1.0, Policy()).read(frame.id, frame.encoded, 0.0)
    routes = {a.route for a in res.lines}
    assert routes <= {"edge", "region"} and "region" in routes
    assert all(a.confidence >= 0.9 for a in res.lines if a.route == "edge")
    assert not res.errors
    regions = sum(a.route == "region" for a in res.lines)
    assert 0 < res.bytes_up < regions * 4000, "gray q4 regions are a few KB each"
    assert res.cloud_ms > 0 and res.device_cpu_s > 0
    assert score(res.lines, truth)["exact"] > score(edge.lines, truth)["exact"]
    assert regions > 1 and res.requests == 1, "a frame's regions travel in one request"


async def test_one_request_per_frame_reads_as_one_request_per_line(tmp_path, frame) -> None:  # type: ignore[no-untyped-def]
    async with gateway(tmp_path) as (_, client):
        together = await OcrApp("hybrid", 1.0, Policy(), client=client).read("a", frame.encoded, 0)
        apart = await OcrApp("hybrid", 1.0, Policy(batch_regions=False), client=client).read(
            "b", frame.encoded, 0
        )
    assert not together.errors and not apart.errors
    regions = sum(a.route == "region" for a in apart.lines)
    assert (together.requests, apart.requests) == (1, regions)
    same = sum(a.text == b.text for a, b in zip(together.lines, apart.lines, strict=True))
    assert same >= len(apart.lines) - 1, "padding to the widest region may change one line"
    assert together.bytes_up < apart.bytes_up, "one coded batch is smaller than its parts"


async def test_the_decider_sends_a_quarter_core_frame_whole_before_reading_it(  # type: ignore[no-untyped-def]
    tmp_path, frame
) -> None:
    port = free_port()
    server = asyncio.ensure_future(cloud_ocr.serve("ppocr_v6", "127.0.0.1", port, None))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.1)
        ocr = FrameClient("127.0.0.1", port)
        async with gateway(tmp_path) as (_, client):
            policy = Policy(decider="heuristic")
            results = {}
            for name, share, link in (("iot-4g", 0.25, (50.0, 10.0)),
                                      ("phone-4g", 1.0, (50.0, 10.0)),
                                      ("iot-slow", 0.25, (200.0, 0.25))):  # fmt: skip
                app = OcrApp("hybrid", share, policy, client=client, frame_ocr=ocr)
                app.link = lambda link=link: link  # type: ignore[misc]
                results[name] = await app.read(name, frame.encoded, time.perf_counter())
        await ocr.close()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    iot = results["iot-4g"]
    assert iot.decision == "OFFLOAD@input/jpeg" and iot.device_cpu_s == 0
    assert {a.route for a in iot.lines} == {"frame"} and iot.bytes_up == len(frame.encoded)
    for name in ("phone-4g", "iot-slow"):  # its own model, or a link too slow for the JPEG
        r = results[name]
        assert r.decision == "CONTINUE_LOCAL" and r.device_cpu_s > 0, name
        assert "region" in {a.route for a in r.lines} and r.bytes_up < len(frame.encoded) / 2


async def test_the_detector_alone_then_every_region_in_one_request(tmp_path, frame) -> None:  # type: ignore[no-untyped-def]
    truth = frame_record(frame, "x.jpg")["lines"]
    async with gateway(tmp_path) as (_, client):
        app = OcrApp("hybrid", 0.25, Policy(decider="heuristic", det_route=True), client=client)
        app.link = lambda: (50.0, 10.0)
        res = await app.read(frame.id, frame.encoded, time.perf_counter())
    assert res.decision == "CONTINUE_LOCAL>OFFLOAD@boxes/q4|zstd", res.decision
    assert not res.errors and res.requests == 1 and res.lines
    assert {a.route for a in res.lines} == {"region"} and all(a.text for a in res.lines)
    assert 0 < res.bytes_up < len(frame.encoded) / 3 and res.device_cpu_s > 0
    assert score(res.lines, truth)["exact"] >= len(truth) - 2


async def test_lines_deferred_offline_are_refined_once_when_the_link_returns(  # type: ignore[no-untyped-def]
    tmp_path, frame
) -> None:
    async with gateway(tmp_path) as (_, client):
        app = OcrApp("hybrid", 1.0, Policy(), client=client)
        up = False
        app.online = lambda: up
        res = await app.read(frame.id, frame.encoded, 0.0)
        deferred = [a for a in res.lines if a.route == "deferred"]
        assert deferred and res.bytes_up == 0
        assert all(a.text == a.edge_text for a in deferred), "the device answers meanwhile"
        up = True
        assert await app.drain() == len(deferred)
        assert {a.route for a in res.lines} <= {"edge", "replayed"}
        sent = res.bytes_up
        assert await app.drain() == len(deferred)  # nothing is sent twice
        assert res.bytes_up == sent and not app.deferred


async def test_whole_frames_go_to_the_cloud_det_rec(frame) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = asyncio.ensure_future(cloud_ocr.serve("ppocr_v6", "127.0.0.1", port, None))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.1)
        ocr = FrameClient("127.0.0.1", port)
        res = await OcrApp("cloud", 1.0, Policy(), frame_ocr=ocr).read("f", frame.encoded, 0.0)
        truth = frame_record(frame, "x.jpg")["lines"]
        assert res.lines and {a.route for a in res.lines} == {"frame"}
        assert res.bytes_up == len(frame.encoded) and res.device_cpu_s == 0
        assert score(res.lines, truth)["exact"] >= len(truth) - 1
        # hostile input: not an image, then a length over the limit (the connection ends)
        lines, _ = await ocr(b"not a jpeg")
        assert lines == []
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(struct.pack(">I", cloud_ocr.MAX_FRAME + 1))
        await w.drain()
        assert await r.read() == b""
        w.close()
        await ocr.close()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


def test_fleet_runs_each_device_as_its_own_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    out = tmp_path / "fleet.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.ocr.fleet", "--devices", "2", "--frames", "1",
         "--frame-pool", "2", "--links", "lan", "--systems", "hybrid", "--interval", "0.5",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    report = json.loads(out.read_text())
    (cell,) = report["cells"]
    assert cell["failed_devices"] == 0 and cell["all"]["errors"] == 0
    assert {d["device_id"] for d in cell["devices"]} == {"ocr-phone-0", "ocr-iot-1"}
    assert {d["share"] for d in cell["devices"]} == {1.0, 0.25}
    assert cell["all"]["frames"] == 2 and cell["all"]["route_share"]["region"] > 0
    assert 0 < cell["all"]["payload_bytes_per_frame"] <= cell["all"]["wire_bytes_up_per_frame"]
    assert cell["gateway_cpu_s"] > 0
    for d in cell["devices"]:
        (f,) = d["frames"]
        # the quarter-core device takes at least four times its CPU time
        assert f["emulated_latency_s"] >= f["device_cpu_s"] / d["share"]
