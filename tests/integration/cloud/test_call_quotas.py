"""Issue 13: inference calls draw on their device's quotas, the same ledger as its sessions.

A device's KServe ModelInfer, each ModelStreamInfer request and its REST infer and features
calls take a token of its request rate and count in flight, with its sessions: over its rate it
is refused (gRPC RESOURCE_EXHAUSTED, REST 429, naming ``limits.requests_per_s``) whichever door it
uses, while another device is served; a request open on its session counts against
``limits.max_inflight_per_device`` for its calls. Nothing stays held once the calls end.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import write_dev_pki
from tests.integration.cloud._gateway import SessionClient, chunk, header, hello, models_dir

X = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
BURST = 3
RATE = 0.01
"""Tokens per second: none comes back while a test runs."""


def _settings(tmp: Path, **limits: object) -> GatewaySettings:
    return GatewaySettings(
        models_dir=models_dir(tmp),
        server={"port": 0},
        metrics={"port": None},
        rest={"port": 0},
        tls={"dir": tmp / "certs"},
        limits={"requests_per_s": RATE, "burst": BURST, **limits},
    )


@asynccontextmanager
async def _gateway(tmp: Path, **limits: object) -> AsyncIterator[Gateway]:
    write_dev_pki(tmp / "certs", ["devA", "devB"])
    async with Gateway(_settings(tmp, **limits)) as gw:
        yield gw


def _rest(gw: Gateway, device: str) -> httpx.AsyncClient:
    certs = Path(gw.settings.tls.dir)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / f"{device}.pem"), str(certs / f"{device}.key"))
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{gw.rest_port}", verify=ctx, timeout=10)


def _channel(gw: Gateway, device: str) -> grpc.aio.Channel:
    certs = Path(gw.settings.tls.dir)
    creds = grpc.ssl_channel_credentials(
        (certs / "ca.pem").read_bytes(),
        (certs / f"{device}.key").read_bytes(),
        (certs / f"{device}.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", creds)


def _model_infer() -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny_cnn")
    req.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    req.raw_input_contents.append(X.tobytes())
    return req


V2_BODY: dict[str, Any] = {
    "inputs": [
        {"name": "input", "datatype": "FP32", "shape": list(X.shape), "data": X.ravel().tolist()}
    ]
}
V1_BODY: dict[str, Any] = {
    "modelName": "tiny_cnn",
    "inputs": [
        {
            "name": "input",
            "datatype": "FP32",
            "shape": [str(d) for d in X.shape],
            "contents": {"fp32Contents": X.ravel().tolist()},
        }
    ],
}
FEATURES_BODY: dict[str, Any] = {
    "modelName": "tiny_cnn",
    "cutPoint": "cut1",
    "featuresB64": base64.b64encode(np.zeros((1, 8, 14, 14), np.float32).tobytes()).decode(),
    "compression": {
        "dtype": "DATA_TYPE_FLOAT32",
        "shape": ["1", "8", "14", "14"],
        "codec": {"stages": [{"kind": "CODEC_KIND_RAW"}]},
    },
}


async def _grpc_code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_device_over_its_rate_is_refused_at_every_door_from_one_bucket(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path) as gw:
        async with _rest(gw, "devA") as rest, _channel(gw, "devA") as ch:
            kserve = pb_grpc.GRPCInferenceServiceStub(ch)
            # The burst, spent over three doors: REST v2, REST v1 and gRPC.
            assert (await rest.post("/v2/models/tiny_cnn/infer", json=V2_BODY)).status_code == 200
            assert (await rest.post("/v1/infer", json=V1_BODY)).status_code == 200
            assert (await _grpc_code(kserve.ModelInfer(_model_infer())))[0] is grpc.StatusCode.OK

            v2 = await rest.post("/v2/models/tiny_cnn/infer", json=V2_BODY)
            assert v2.status_code == 429
            assert "request rate of 0.01/s (limits.requests_per_s)" in v2.json()["error"]
            for path, body in (("/v1/infer", V1_BODY), ("/v1/features", FEATURES_BODY)):
                r = await rest.post(path, json=body)
                assert r.status_code == 429, (path, r.text)
                assert r.json()["code"] == "RESOURCE_EXHAUSTED"
                assert "limits.requests_per_s" in r.json()["message"]
            code, details = await _grpc_code(kserve.ModelInfer(_model_infer()))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "device 'devA' is over its request rate" in details

            stream = kserve.ModelStreamInfer(iter([_model_infer(), _model_infer()]))
            answers = [a async for a in stream]
            assert len(answers) == 2  # each request refused alone; the stream ends OK
            assert all(
                a.error_message.startswith("RESOURCE_EXHAUSTED: device 'devA' is over its")
                for a in answers
            )
            session = SessionClient(ch)  # its sessions share the bucket
            await session.send(hello())
            await session.send(header("s1", X.shape), chunk("s1", 0, X.tobytes(), True))
            refused = await session.recv()
            assert refused.WhichOneof("frame") == "infer_error"
            assert "limits.requests_per_s" in refused.infer_error.status.message
            await session.call.done_writing()

        # another device is served meanwhile
        async with _rest(gw, "devB") as rest, _channel(gw, "devB") as ch:
            assert (await rest.post("/v2/models/tiny_cnn/infer", json=V2_BODY)).status_code == 200
            ok = await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(_model_infer())
            assert ok.model_name == "tiny_cnn"
        assert gw.quotas.ledger("devB") is None  # nothing in flight: dropped
        assert gw.quotas.budget.used == 0


async def test_a_request_open_on_a_session_counts_in_flight_for_the_devices_calls(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path, burst=100, max_inflight_per_device=1) as gw:
        async with _rest(gw, "devA") as rest, _channel(gw, "devA") as ch:
            kserve = pb_grpc.GRPCInferenceServiceStub(ch)
            session = SessionClient(ch)
            await session.send(hello(), header("open", X.shape))  # reassembling: in flight
            await session.recv(("welcome",))
            for _ in range(20):  # the header is read after the Welcome
                ledger = gw.quotas.ledger("devA")
                if ledger is not None and ledger.inflight == 1:
                    break
                await asyncio.sleep(0.02)
            code, details = await _grpc_code(kserve.ModelInfer(_model_infer()))
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over its sessions and calls (limits.max_inflight_per_device = 1)" in details
            r = await rest.post("/v2/models/tiny_cnn/infer", json=V2_BODY)
            assert r.status_code == 429 and "max_inflight_per_device" in r.json()["error"]

            await session.send(chunk("open", 0, X.tobytes(), True))
            assert (await session.recv()).WhichOneof("frame") == "infer_result"
            assert (await _grpc_code(kserve.ModelInfer(_model_infer())))[0] is grpc.StatusCode.OK
            assert (await rest.post("/v2/models/tiny_cnn/infer", json=V2_BODY)).status_code == 200
            await session.call.done_writing()
            assert await session.recv() is None
        for _ in range(50):  # the session's end is seen by the gateway shortly after ours
            if gw.quotas.ledger("devA") is None:
                break
            await asyncio.sleep(0.02)
        assert gw.quotas.ledger("devA") is None and gw.quotas.budget.used == 0
