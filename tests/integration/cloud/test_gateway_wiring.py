"""The gateway's parts wired together, in process: control services on the gateway's port (and
in reflection), rollouts on ModelInfer and session requests, the result cache, telemetry from
the session stream and TelemetryService, per-request metadata, and bundle entropy models."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from aiml021.common.v1 import request_pb2
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc
from aiml021.session.v1 import session_pb2
from aiml021.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud.core import ModelRepository, RequestRecord, TelemetryEvent, specs_from_bundle
from common import codecs
from common.bundle import load_bundle
from common.settings import nest
from tests.integration.cloud._gateway import SessionClient, header, hello, logits, models_dir


def _settings(tmp: Path, **kw: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "models_dir": models_dir(tmp),
        "server.port": 0,
        "metrics.port": None,
        "tls.insecure": True,
    }
    return GatewaySettings(**nest({**base, **kw}))


def _two_versions(tmp: Path) -> ModelRepository:
    specs = specs_from_bundle(models_dir(tmp) / "tiny_cnn", 64)
    return ModelRepository([*specs, *(dataclasses.replace(s, version="2") for s in specs)])


async def _list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    resp = await call.read()
    await call.done_writing()
    return {s.name for s in resp.list_services_response.service}


def _kserve_request(x: np.ndarray, model: str = "tiny_cnn", **kw: Any) -> kpb.ModelInferRequest:
    req = kpb.ModelInferRequest(model_name=model, id="k1", **kw)
    t = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    del t
    req.raw_input_contents.append(x.astype(np.float32).tobytes())
    return req


async def test_control_and_extra_services_share_the_port_and_reflection(tmp_path: Path) -> None:
    added: list[grpc.aio.Server] = []
    gw = Gateway(_settings(tmp_path))
    gw.add_service(added.append, "example.v1.Extra")
    async with gw:
        assert added, "the registration callback ran"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            names = await _list_services(ch)
            models = await registry_pb2_grpc.ModelRegistryServiceStub(ch).ListModels(
                registry_pb2.ListModelsRequest()
            )
            decision = await policy_pb2_grpc.PolicyServiceStub(ch).Decide(
                policy_pb2.DecideRequest(context=_policy_context())
            )
    assert {
        "aiml021.session.v1.SessionService",
        "inference.GRPCInferenceService",
        "aiml021.registry.v1.ModelRegistryService",
        "aiml021.deploy.v1.DeployService",
        "aiml021.cache.v1.CacheService",
        "aiml021.telemetry.v1.TelemetryService",
        "aiml021.policy.v1.PolicyService",
        "example.v1.Extra",
        health.SERVICE_NAME,
    } <= names
    assert "tiny_cnn" in {m.name for m in models.models}
    assert decision.decision.policy_id == "heuristic"


def _policy_context() -> policy_pb2.DecisionContext:
    ctx = policy_pb2.DecisionContext(model_name="tiny_cnn", exit_index=0, exit_confidences=[0.99])
    ctx.deadline.FromMilliseconds(200)
    ctx.rtt.FromMilliseconds(20)
    ctx.bandwidth_bps = 8e6
    ctx.modality = request_pb2.MODALITY_IMAGE
    return ctx


async def test_canary_applies_to_modelinfer_and_session_requests(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((1, 1, 28, 28), dtype=np.float32)
    async with Gateway(_settings(tmp_path), repository=_two_versions(tmp_path)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            kserve = kgrpc.GRPCInferenceServiceStub(ch)
            before = await kserve.ModelInfer(_kserve_request(x))
            assert before.model_version == "2"  # newest
            await deploy_pb2_grpc.DeployServiceStub(ch).SetRollout(
                deploy_pb2.SetRolloutRequest(
                    rollout=deploy_pb2.Rollout(
                        model_name="tiny_cnn",
                        stable_version="2",
                        candidate_version="1",
                        mode=deploy_pb2.ROLLOUT_MODE_CANARY,
                        traffic_fraction=1.0,
                    )
                )
            )
            after = await kserve.ModelInfer(_kserve_request(x))
            pinned = await kserve.ModelInfer(_kserve_request(x, model_version="2"))
            client = SessionClient(ch)
            await client.send(hello("dev-r"))
            await client.recv(("welcome",))
            full = await client.infer("s1", x)
            # The bundle's rollout also routes its tail (cut point) requests.
            cut = np.zeros((1, 8, 14, 14), np.float32)
            tail = await client.infer("s2", cut, cut="cut1")
            await client.call.done_writing()
        _, stats = gw.rollouts.get("tiny_cnn")
    assert after.model_version == "1" and pinned.model_version == "2"
    assert full.infer_result.served_model_version == "1"
    assert tail.infer_result.served_model_version == "1"
    assert stats.candidate_requests == 3, stats  # ModelInfer, session full, session tail


async def test_rest_and_grpc_front_doors_share_one_core(tmp_path: Path) -> None:
    """A rollout set over gRPC is what the REST bridge (built by the composition root over the
    same core) reports, and the registry's default version follows the rollout's stable one."""
    async with Gateway(_settings(tmp_path), repository=_two_versions(tmp_path)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            await deploy_pb2_grpc.DeployServiceStub(ch).SetRollout(
                deploy_pb2.SetRolloutRequest(
                    rollout=deploy_pb2.Rollout(
                        model_name="tiny_cnn",
                        stable_version="1",
                        candidate_version="2",
                        mode=deploy_pb2.ROLLOUT_MODE_CANARY,
                        traffic_fraction=0.5,
                    )
                )
            )
        transport = httpx.ASGITransport(app=gw.rest.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as rest:
            model = (await rest.get("/v1/models/tiny_cnn")).json()["model"]
            rollout = (await rest.get("/v1/deploy/rollouts/tiny_cnn")).json()["rollout"]
            ready = (await rest.get("/v2/health/ready")).json()
    assert model["defaultVersion"] == "1"  # the stable version, not the newest
    assert rollout["mode"] == "ROLLOUT_MODE_CANARY" and rollout["candidateVersion"] == "2"
    assert ready == {"ready": True}


@pytest.mark.parametrize("cache_kserve", [True, False])
async def test_result_cache_answers_repeated_full_model_inputs(
    tmp_path: Path, cache_kserve: bool
) -> None:
    # ModelInfer is the Triton protocol: the cache answers it only with cache.kserve (Triton's
    # response cache is opt-in; perf_analyzer repeats one input and would measure the cache).
    x = np.random.default_rng(4).random((1, 1, 28, 28), dtype=np.float32)
    cut = np.random.default_rng(5).random((1, 8, 14, 14), dtype=np.float32)
    async with Gateway(_settings(tmp_path, **{"cache.kserve": cache_kserve})) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            kserve = kgrpc.GRPCInferenceServiceStub(ch)
            first = await kserve.ModelInfer(_kserve_request(x))
            second = await kserve.ModelInfer(_kserve_request(x))
            for _ in range(2):  # tail segments are not cached by default
                await kserve.ModelInfer(_tail_request(cut))
        m = gw.metrics
        hits = m.cache_requests.labels("tiny_cnn", "hit")._value.get()
        misses = m.cache_requests.labels("tiny_cnn", "miss")._value.get()
        batches = sum(
            s.value
            for met in m.batch_size.collect()
            for s in met.samples
            if s.name.endswith("_count")
        )
    assert first.raw_output_contents == second.raw_output_contents
    if cache_kserve:
        assert (hits, misses) == (1, 1)
        assert batches == 3  # one full-model computation, two tail computations
    else:
        assert (hits, misses) == (0, 0)
        assert batches == 4  # the full model computed twice, two tail computations


def _tail_request(cut: np.ndarray) -> kpb.ModelInferRequest:
    req = kpb.ModelInferRequest(model_name="tiny_cnn.cut1", id="t")
    req.inputs.add(name="cut1", datatype="FP32", shape=list(cut.shape))
    req.raw_input_contents.append(cut.tobytes())
    return req


async def test_telemetry_from_session_and_service_is_recorded(tmp_path: Path) -> None:
    seen: list[TelemetryEvent] = []
    gw = Gateway(_settings(tmp_path), telemetry_sink=seen.append)
    async with gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            client = SessionClient(ch)
            await client.send(hello("dev-t"))
            await client.recv(("welcome",))
            batch = _batch(request_pb2.ROUTE_EDGE, 3, dropped=2)
            await client.send(session_pb2.ConnectRequest(telemetry_batch=batch))
            # The stream keeps serving after telemetry: a ping is answered.
            await client.send(session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=7)))
            pong = await client.recv(("pong",))
            await client.call.done_writing()
            reply = await telemetry_pb2_grpc.TelemetryServiceStub(ch).Report(
                telemetry_pb2.ReportRequest(batch=_batch(request_pb2.ROUTE_CLOUD, 2))
            )
        m = gw.metrics
        edge = m.telemetry_events.labels("edge")._value.get()
        cloud = m.telemetry_events.labels("cloud")._value.get()
        sent = m.telemetry_bytes.labels("sent")._value.get()
        dropped = m.telemetry_dropped._value.get()
        lat_count = [
            s.value
            for met in m.device_latency.collect()
            for s in met.samples
            if s.name.endswith("_count") and s.labels["route"] == "edge"
        ]
    assert pong.pong.nonce == 7 and reply.accepted == 2
    assert (edge, cloud, sent, dropped) == (3, 2, 500, 2)
    assert lat_count == [3]
    # On the stream the session's device id wins over the batch's field; TelemetryService
    # under --insecure has no certificate, so the batch's id is used.
    assert len(seen) == 5 and {e.device_id for e in seen[:3]} == {"dev-t"}
    assert {e.device_id for e in seen[3:]} == {"spoofed-id"}
    assert all(e.session_id for e in seen[:3]) and seen[0].total_s == 0.025


def _batch(route: int, n: int, dropped: int = 0) -> telemetry_pb2.TelemetryBatch:
    b = telemetry_pb2.TelemetryBatch(device_id="spoofed-id", dropped=dropped)
    for i in range(n):
        e = b.events.add(request_id=f"e{i}", model_name="tiny_cnn", route=route, bytes_sent=100)
        e.timing.total.CopyFrom(duration_pb2.Duration(nanos=25_000_000))
    return b


async def test_session_records_carry_deadline_session_top_class_and_bytes(tmp_path: Path) -> None:
    records: list[RequestRecord] = []
    x = np.random.default_rng(6).random((1, 1, 28, 28), dtype=np.float32)
    async with Gateway(_settings(tmp_path), metadata_sink=records.append) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            client = SessionClient(ch)
            await client.send(hello("dev-m"))
            welcome = await client.recv(("welcome",))
            h = header("m1", x.shape, deferred=True)
            h.infer_header.deadline.GetCurrentTime()
            h.infer_header.deadline.seconds += 5
            await client.send(h, _chunk("m1", x.tobytes()))
            res = await client.recv()
            await client.call.done_writing()
    (r,) = records
    assert r.session_id == welcome.welcome.session_id and r.offload_reason == "deferred"
    assert r.deadline_ms is not None and 4000 < r.deadline_ms <= 5000
    assert r.top_class == res.infer_result.top_class == int(logits(res).argmax())
    assert r.confidence is not None and 0 < r.confidence <= 1
    assert r.bytes_out == 40 and r.latency_ms is not None and r.latency_ms >= 0


def _chunk(rid: str, data: bytes) -> session_pb2.ConnectRequest:
    return session_pb2.ConnectRequest(
        tensor_chunk=session_pb2.TensorChunk(request_id=rid, offset=0, data=data, last=True)
    )


async def test_ans_frames_decode_with_the_bundles_entropy_model(tmp_path: Path) -> None:
    root = models_dir(tmp_path) / "tiny_cnn"
    sess = ort.InferenceSession(str(root / "stage1.onnx"))
    rng = np.random.default_rng(7)
    acts = [sess.run(["cut1"], {"input": rng.random((4, 1, 28, 28), np.float32)})[0]]
    spec = "clip:0,2|q4|ans"
    model = codecs.fit_entropy_model(spec, acts, cut="cut1")
    model.save(root / "cut1.entropy.json")
    load_bundle(root).update_cut_codec("cut1", spec, root / "cut1.entropy.json")
    cut = acts[0][:1]
    frame = codecs.encode(cut, codecs.CodecSpec.parse(spec), entropy_model=model)
    assert codecs.peek_header(frame[:256]) is not None
    async with Gateway(_settings(tmp_path)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            client = SessionClient(ch)
            await client.send(hello("dev-e"))
            await client.recv(("welcome",))
            await client.send(header("a1", cut.shape, total=len(frame), cut="cut1"))
            await client.send(_chunk("a1", frame))
            res = await client.recv()
            await client.call.done_writing()
    assert res.WhichOneof("frame") == "infer_result", res
    want = codecs.decode(frame, entropy_models=model)
    tail = ort.InferenceSession(str(root / "tail_cut1.onnx")).run(None, {"cut1": want})[0]
    np.testing.assert_allclose(logits(res), tail, rtol=1e-4, atol=1e-4)
