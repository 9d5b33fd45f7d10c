"""Triton fidelity beyond inference results: the statistics perf_analyzer reads (unary and
streaming), server reflection v1 beside v1alpha, the repository API through the unchanged
tritonclient.http, and the KServe-v2 REST front door refusing what a hostile client sends
(binary-data sizes that lie, huge shapes, trailing bytes) with 4xx ``{"error"}`` answers."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud import Gateway
from cloud._settings import GatewaySettings
from tests.support.tiny_models import tail_model

ROOT = Path(__file__).resolve().parents[3]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def _settings(tmp: Path, **cache: object) -> GatewaySettings:
    models = tmp / "models"
    if not (models / "conf.onnx").exists():
        tail_model(models / "conf.onnx", seed=1)  # features [N,4,3,3] -> logits [N,10]
    return GatewaySettings(
        models_dir=models,
        server={"port": 0},
        metrics={"port": None},
        rest={"port": 0},
        tls={"insecure": True},
        cache={"full_models": True, **cache},
        stores={"metadata_url": "none"},
    )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with Gateway(_settings(tmp_path)) as gw:
        yield gw


def _request(x: np.ndarray, rid: str = "", model: str = "conf") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model, model_version="1", id=rid)
    req.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, 3, 3)).astype(np.float32)


async def _stats(stub: pb_grpc.GRPCInferenceServiceStub) -> pb.ModelStatistics:
    resp = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="conf", version="1"))
    assert len(resp.model_stats) == 1
    return resp.model_stats[0]


async def test_unary_and_streaming_requests_fill_every_statistic_perf_analyzer_reads(
    gateway: Gateway,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        for i in range(3):
            await stub.ModelInfer(_request(_x(2, i)))  # 3 requests of 2 samples

        async def stream() -> AsyncIterator[pb.ModelInferRequest]:
            for i in range(5):
                yield _request(_x(1, 10 + i), rid=str(i))
            wrong = _request(_x(1, 0))
            wrong.inputs[0].shape[:] = [1, 4, 3, 2]  # refused before queueing: no failure
            yield wrong

        answers = [a async for a in stub.ModelStreamInfer(stream())]
        assert sum(1 for a in answers if not a.error_message) == 5
        assert sum(1 for a in answers if a.error_message.startswith("INVALID_ARGUMENT")) == 1
        s = await _stats(stub)
    st = s.inference_stats
    # streaming requests count exactly like unary ones (perf_analyzer --streaming reads these)
    assert st.success.count == 8 and st.success.ns > 0
    assert s.inference_count == 3 * 2 + 5  # samples
    for d in (st.queue, st.compute_input, st.compute_infer, st.compute_output):
        assert d.count == 8 and d.ns > 0
    assert st.fail.count == 0  # refusals before queueing are not failures of the model (Triton)
    assert st.cache_hit.count == 0 and st.cache_miss.count == 0  # the Triton protocol: no cache
    assert s.last_inference > 0
    assert s.execution_count == sum(b.compute_infer.count for b in s.batch_stats) > 0
    sizes = [b.batch_size for b in s.batch_stats]
    assert sizes == sorted(sizes) and set(sizes) <= set(range(1, 12))
    assert sum(b.batch_size * b.compute_infer.count for b in s.batch_stats) == 11
    for b in s.batch_stats:
        assert b.compute_input.count == b.compute_output.count == b.compute_infer.count


async def test_with_cache_kserve_repeated_inputs_are_cache_hits(tmp_path: Path) -> None:
    async with Gateway(_settings(tmp_path, kserve=True)) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            x = _x(1, 3)
            first = await stub.ModelInfer(_request(x))
            second = await stub.ModelInfer(_request(x))
            s = await _stats(stub)
    assert first.raw_output_contents == second.raw_output_contents
    st = s.inference_stats
    assert (st.success.count, st.cache_hit.count, st.cache_miss.count) == (2, 1, 1)
    assert st.compute_infer.count == 1  # the hit was not computed
    assert s.execution_count == 1


def _buf_curl(port: int, protocol: str, *args: str) -> str:
    proc = subprocess.run(
        [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge",
         "--reflect-protocol", protocol, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def test_reflection_v1_and_v1alpha_are_served(gateway: Gateway) -> None:
    url = f"http://127.0.0.1:{gateway.port}"
    for protocol in ("grpc-v1", "grpc-v1alpha"):
        services = await asyncio.to_thread(
            _buf_curl, gateway.port, protocol, "--list-services", url
        )
        assert "grpc.reflection.v1.ServerReflection" in services.split()
        assert "grpc.reflection.v1alpha.ServerReflection" in services.split()
        assert "inference.GRPCInferenceService" in services.split()
        # a call whose schema comes from reflection alone
        meta = await asyncio.to_thread(
            _buf_curl, gateway.port, protocol, "-d", '{"name": "conf"}',
            f"{url}/inference.GRPCInferenceService/ModelMetadata",
        )  # fmt: skip
        assert json.loads(meta)["inputs"][0]["shape"] == ["-1", "4", "3", "3"]


_REPOSITORY_SCRIPT = """
import json, sys
import tritonclient.http as th
from tritonclient.utils import InferenceServerException
c = th.InferenceServerClient(sys.argv[1])
out = {}
c.unload_model("conf")
out["ready_after_unload"] = c.is_model_ready("conf")
out["index_after_unload"] = c.get_model_repository_index()
try:
    c.get_model_metadata("conf")
except InferenceServerException as exc:
    out["metadata_after_unload"] = exc.status()
c.load_model("conf")
out["ready_after_load"] = c.is_model_ready("conf")
out["index_after_load"] = c.get_model_repository_index()
try:
    c.load_model("never_served")
except InferenceServerException as exc:
    out["load_unknown"] = exc.status()
out["server"] = c.get_server_metadata()
out["live"] = c.is_server_live()
print(json.dumps(out))
"""


async def test_repository_load_unload_through_tritonclient_http(gateway: Gateway) -> None:
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _REPOSITORY_SCRIPT, f"127.0.0.1:{gateway.rest_port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["ready_after_unload"] is False
    assert out["index_after_unload"] == [
        {"name": "conf", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
    ]
    assert out["metadata_after_unload"] == "404"
    assert out["ready_after_load"] is True
    assert out["index_after_load"] == [{"name": "conf", "version": "1", "state": "READY"}]
    assert out["load_unknown"] == "404"
    assert out["live"] is True
    assert "binary_tensor_data" in out["server"]["extensions"]


def _binary_body(header: dict[str, object], data: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def _tensor(shape: list[int], **params: object) -> dict[str, object]:
    t: dict[str, object] = {"name": "features", "datatype": "FP32", "shape": shape}
    if params:
        t["parameters"] = params
    return t


X36 = np.zeros(36, np.float32).tobytes()


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        # binary_data_size larger than what follows the header
        (*_binary_body({"inputs": [_tensor([1, 4, 3, 3], binary_data_size=1 << 30)]}, X36),
         "does not fit"),
        # a negative or non-integer size
        (*_binary_body({"inputs": [_tensor([1, 4, 3, 3], binary_data_size=-4)]}, X36),
         "does not fit"),
        (*_binary_body({"inputs": [_tensor([1, 4, 3, 3], binary_data_size="144")]}, X36),
         "does not fit"),
        # the size fits the body but not the shape
        (*_binary_body({"inputs": [_tensor([1, 4, 3, 3], binary_data_size=140)]}, X36[:140]),
         "needs 144"),
        # bytes after the tensors that belong to no input
        (*_binary_body({"inputs": [_tensor([1, 4, 3, 3], binary_data_size=144)]}, X36 + b"xx"),
         "belong to no input"),
        # a header length past the body, or not a number
        (b"{}", {"Inference-Header-Content-Length": "99999"}, "not a length"),
        (b"{}", {"Inference-Header-Content-Length": "-1"}, "not a length"),
        # a shape that would allocate terabytes, declared in JSON
        (json.dumps({"inputs": [{**_tensor([1 << 20, 1 << 20]), "data": [1.0]}]}).encode(), {},
         "elements"),
        # both data and binary data
        (*_binary_body({"inputs": [{**_tensor([1, 4, 3, 3], binary_data_size=144),
                                    "data": [0.0] * 36}]}, X36), "both"),
        (json.dumps({"inputs": [{**_tensor([1, 4, 3, 3]), "data": [0.0] * 36}],
                     "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}
                    ).encode(), {}, "classification"),
        (json.dumps({"inputs": [{**_tensor([1, 4, 3, 3]), "data": [0.0] * 36}],
                     "parameters": {"binary_data_output": "yes"}}).encode(), {}, "boolean"),
    ],
)  # fmt: skip
async def test_v2_infer_refuses_lying_bodies_with_4xx_error(
    gateway: Gateway, body: bytes, headers: dict[str, str], needle: str
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.rest_port}") as c:
        r = await c.post("/v2/models/conf/versions/1/infer", content=body, headers=headers)
        ok = await c.post(
            "/v2/models/conf/infer",
            json={"inputs": [{**_tensor([1, 4, 3, 3]), "data": [0.5] * 36}]},
        )
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and needle in r.json()["error"]
    assert ok.status_code == 200  # and the gateway goes on serving


async def test_v2_binary_output_round_trip_matches_json(gateway: Gateway) -> None:
    x = _x(2, 7)
    head = {
        "id": "b1",
        "inputs": [_tensor([2, 4, 3, 3], binary_data_size=x.nbytes)],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    body, headers = _binary_body(head, x.tobytes())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.rest_port}") as c:
        binary = await c.post("/v2/models/conf/infer", content=body, headers=headers)
        as_json = await c.post(
            "/v2/models/conf/infer",
            json={"inputs": [{**_tensor([2, 4, 3, 3]), "data": x.reshape(-1).tolist()}]},
        )
    n = int(binary.headers["inference-header-content-length"])
    doc = json.loads(binary.content[:n])
    out = doc["outputs"][0]
    assert doc["id"] == "b1" and out["shape"] == [2, 10] and "data" not in out
    assert out["parameters"]["binary_data_size"] == len(binary.content) - n == 80
    logits = np.frombuffer(binary.content[n:], np.float32).reshape(2, 10)
    expected = np.array(as_json.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-6)


async def test_compressed_bodies_within_limits_and_bombs_refused(gateway: Gateway) -> None:
    import gzip
    import zlib

    x = _x(64, 11)
    doc = {"inputs": [{**_tensor([64, 4, 3, 3]), "data": x.reshape(-1).tolist()}]}
    plain = json.dumps(doc).encode()
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in ~64 KiB: past the body limit
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.rest_port}") as c:
        url = "/v2/models/conf/infer"
        ok = await c.post(
            url,
            content=zlib.compress(plain),
            headers={"Content-Encoding": "deflate", "Accept-Encoding": "gzip"},
        )
        identity = await c.post(url, content=plain, headers={"Accept-Encoding": "identity"})
        refused = {
            "bomb": await c.post(url, content=bomb, headers={"Content-Encoding": "gzip"}),
            "not gzip": await c.post(url, content=plain, headers={"Content-Encoding": "gzip"}),
            "truncated": await c.post(
                url, content=gzip.compress(plain)[:-20], headers={"Content-Encoding": "gzip"}
            ),
            "unknown coding": await c.post(url, content=plain, headers={"Content-Encoding": "br"}),
        }
        small = await c.post(  # one sample: an answer too small to be worth compressing
            url,
            json={"inputs": [{**_tensor([1, 4, 3, 3]), "data": [0.0] * 36}]},
            headers={"Accept-Encoding": "gzip"},
        )
    assert ok.status_code == 200 and ok.headers["content-encoding"] == "gzip"
    assert ok.json() == identity.json()  # httpx inflated it
    assert "content-encoding" not in identity.headers and "content-encoding" not in small.headers
    assert refused["bomb"].status_code == 413, refused["bomb"].text
    for what in ("not gzip", "truncated", "unknown coding"):
        assert refused[what].status_code == 400, (what, refused[what].text)
        assert list(refused[what].json()) == ["error"]


async def test_rest_requests_are_counted_like_grpc_ones(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.rest_port}") as c:
        good = {"inputs": [{**_tensor([1, 4, 3, 3]), "data": [0.1] * 36}]}
        assert (await c.post("/v2/models/conf/infer", json=good)).status_code == 200
        bad = {"inputs": [{**_tensor([1, 4, 3, 2]), "data": [0.1] * 24}]}
        assert (await c.post("/v2/models/conf/infer", json=bad)).status_code == 400
        v1 = {
            "modelName": "conf",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": ["1", "4", "3", "3"]}],
            "rawInputContents": [base64.b64encode(_x(1, 1).tobytes()).decode()],
        }
        assert (await c.post("/v1/infer", json=v1)).status_code == 200
    counts = {
        (s.labels["model"], s.labels["status"]): s.value
        for metric in gateway.metrics.requests.collect()
        for s in metric.samples
        if s.name.endswith("_total") and s.labels.get("api") == "rest"
    }
    assert counts == {("conf", "OK"): 2, ("conf", "INVALID_ARGUMENT"): 1}
