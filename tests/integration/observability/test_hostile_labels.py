"""A hostile device with a valid certificate cannot grow the gateway's metrics, drift state or
stored labels through what it declares: regions, device classes, model names, confidences,
replay backlog and trace context are bounded or ignored, and its own requests still work."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc
from aiml021.telemetry.v1 import telemetry_pb2

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import write_dev_pki

ROOT = Path(__file__).resolve().parents[3]
DEVICE = "hostile-1"
BIG = 2**64 - 1


def _batch(i: int) -> session_pb2.ConnectRequest:
    batch = telemetry_pb2.TelemetryBatch(
        device_id="someone-else",
        region=f"region-{i}-" + "x" * 5000,
        device_class=f"class-{i}",
        replay_backlog=BIG,
        dropped=BIG,
    )
    for j, conf in enumerate((float("nan"), float("inf"), -1.0, 0.5)):
        batch.events.add(request_id=f"{i}-{j}", model_name=f"model-{i}-{j}", confidence=conf)
    return session_pb2.ConnectRequest(telemetry_batch=batch)


def _header(rid: str, x: np.ndarray, region: str, traceparent: str) -> session_pb2.ConnectRequest:
    data = x.astype(np.float32).tobytes()
    h = session_pb2.InferHeader(
        request_id=rid,
        model_name="fmnist_branchy",
        total_bytes=len(data),
        context=request_pb2.RequestContext(region=region, device_class="cam"),
        traceparent=traceparent,
        payload=data,
    )
    h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
    h.encoding.shape.extend(x.shape)
    return session_pb2.ConnectRequest(infer_header=h)


async def test_declared_labels_stay_bounded_and_the_device_is_still_served(tmp_path: Path) -> None:
    write_dev_pki(tmp_path, [DEVICE], hosts=["localhost", "127.0.0.1"])
    settings = GatewaySettings.model_validate(
        {
            "models_dir": ROOT / "models",
            "server": {"port": 0},
            "metrics": {"port": None},
            "tls": {"dir": tmp_path},
            "drain_grace_s": 0.5,
            "observability": {"regions": ["eu-west"], "drift": {"reference_size": 10}},
        }
    )
    creds = grpc.ssl_channel_credentials(
        root_certificates=(tmp_path / "ca.pem").read_bytes(),
        private_key=(tmp_path / f"{DEVICE}.key").read_bytes(),
        certificate_chain=(tmp_path / f"{DEVICE}.pem").read_bytes(),
    )
    async with Gateway(settings) as gw:
        spec = gw.dataplane.repository.resolve("fmnist_branchy")
        x = np.zeros((1, *spec.inputs[0].shape[1:]), np.float32)
        options = (("grpc.ssl_target_name_override", "localhost"),)
        async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", creds, options) as ch:
            call = session_pb2_grpc.SessionServiceStub(ch).Connect()
            await call.write(
                session_pb2.ConnectRequest(
                    hello=session_pb2.Hello(device_id=DEVICE, protocol_version=1)
                )
            )
            for i in range(200):
                await call.write(_batch(i))
            hostile = [
                ("r1", "eu-west" + "\x00" * 3, "00-" + "f" * 200),
                ("r2", "r" * 50_000, "not a traceparent"),
                ("r3", "eu-west", "00-00000000000000000000000000000000-0000000000000000-01"),
            ]
            for rid, region, tp in hostile:
                await call.write(_header(rid, x, region, tp))
            answers: dict[str, session_pb2.InferResult] = {}
            while len(answers) < len(hostile):
                msg = await asyncio.wait_for(call.read(), 10)
                assert msg is not grpc.aio.EOF
                if msg.WhichOneof("frame") == "infer_result":
                    answers[msg.infer_result.request_id] = msg.infer_result
            await call.done_writing()
            # telemetry is handled as it arrives: wait for the last batch to count
            registry = gw.metrics.registry
            for _ in range(200):
                events = registry.get_sample_value(
                    "aiml021_gateway_telemetry_events_total", {"route": "unspecified"}
                )
                if events == 800:
                    break
                await asyncio.sleep(0.05)
            assert events == 800
            call.cancel()

        assert set(answers) == {"r1", "r2", "r3"}  # every request of the device was served
        samples = [s for fam in registry.collect() for s in fam.samples]
        regions = {s.labels["region"] for s in samples if "region" in s.labels}
        assert regions <= {"eu-west", "_other", "unspecified"}
        classes = {s.labels["device_class"] for s in samples if "device_class" in s.labels}
        assert len(classes) <= 64 + 2  # the first 64 values, "_other", "cam"
        models = {s.labels["model"] for s in samples if "model" in s.labels}
        assert all(not m.startswith("model-") for m in models)
        # one device, one report: the latest replaces the previous, never adds up
        backlog = [
            s.value for s in samples
            if s.name == "aiml021_gateway_device_replay_backlog_requests" and s.value
        ]  # fmt: skip
        assert backlog == [float(BIG)]
        devices = sum(s.value for s in samples if s.name == "aiml021_gateway_reporting_devices")
        assert devices == 1
        drift = gw.observers.drift
        assert drift is not None and len(drift._signals) <= 3  # (model, region, signal) bounded
