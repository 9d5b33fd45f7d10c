"""Unchanged tritonclient (sync and aio, unary and streaming, in a child process) against the
gateway: results equal a direct onnxruntime run; 64 concurrent requests are batched."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cloud import Gateway
from cloud._settings import GatewaySettings
from tests.integration.cloud._gateway import models_dir
from tests.support.tritonclient import run_script

SCRIPT = Path(__file__).with_name("_tc_client.py")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as resp:
        return bytes(resp.read())


async def test_tritonclient_gets_onnxruntime_results_and_batching(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    models = models_dir(tmp_path)
    ref = ort.InferenceSession(str(models / "tiny_cnn" / "full.onnx")).run(None, {"input": x})[0]
    # The result cache would answer the repeated inputs; this test is about batching.
    settings = GatewaySettings(
        models_dir=models,
        server={"port": 0},
        metrics={"port": 0},
        tls={"insecure": True},
        batching={"max_queue_delay_ms": 30},
        cache={"full_models": False},
    )
    async with Gateway(settings) as gw:
        args = {"url": f"127.0.0.1:{gw.port}", "model": "tiny_cnn", "seed": 0, "n": 4}
        out = await asyncio.to_thread(run_script, SCRIPT, args, timeout=60)
        metrics = await asyncio.to_thread(_fetch, f"http://127.0.0.1:{gw.metrics_port}/metrics")
    assert out["ready"] and out["metadata_inputs"] == ["input"]
    tol = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(out["infer"], ref[:1], **tol)
    np.testing.assert_allclose(out["infer_batch"], ref, **tol)
    np.testing.assert_allclose(out["stream"], ref, **tol)
    np.testing.assert_allclose(out["aio_stream"], ref, **tol)
    np.testing.assert_allclose(out["aio64"], [ref[i % 4] for i in range(64)], **tol)
    errors = out["errors"]
    assert errors["unknown_model"].startswith("StatusCode.NOT_FOUND")
    assert errors["wrong_dtype"].startswith("StatusCode.INVALID_ARGUMENT")
    assert "dtype" in errors["wrong_dtype"]
    assert errors["wrong_shape"].startswith("StatusCode.INVALID_ARGUMENT")
    assert errors["raw_size"].startswith("StatusCode.INVALID_ARGUMENT")
    # The 64 concurrent requests were grouped: fewer executions than inferences.
    stats = out["stats"]
    assert stats["execution_count"] < stats["inference_count"] - 32
    text = metrics.decode()
    assert 'aiml021_gateway_batch_size_bucket{le="1.0",model="tiny_cnn"}' in text
    assert 'aiml021_gateway_requests_total{api="infer",model="tiny_cnn",status="OK"}' in text
    assert 'api="stream",model="tiny_cnn",status="OK"' in text
    # a model name the gateway does not serve is counted under one label, never as its own series
    assert 'aiml021_gateway_requests_total{api="infer",model="_unknown",status="NOT_FOUND"}' in text
    assert 'model="nope"' not in text
