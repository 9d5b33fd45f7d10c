"""``aiml021 serve --workers 2`` as real processes over a real Redis and PostgreSQL: connections
spread over both workers on one port, one idempotency key is computed once whichever worker each
retry lands on, a rollout set through one worker routes every worker, a worker killed -9 is
replaced while the other keeps serving, SIGTERM drains them all; memory stores are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc
from prometheus_client.parser import text_string_to_metric_families

from tests.integration._services import (  # noqa: F401 (fixtures)
    database_url,
    postgres_server,
    redis_server,
    redis_url,
)
from tests.support.gateway import vector_model

CONNECTIONS = 16


def versioned_models(root: Path) -> Path:
    """``vec`` in versions 1 and 2 (Triton layout, both served): a vector sum, any width."""
    for v in ("1", "2"):
        vector_model(root / "vec" / v / "model.onnx")
    (root / "vec" / "config.pbtxt").write_text(
        'name: "vec"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 64\nversion_policy: { all { } }\n'
    )
    return root


@contextmanager
def serve_workers(
    tmp: Path, *extra: str, workers: int = 2
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    port_file = tmp / "ports.json"
    cmd = [sys.executable, "-m", "cloud", "serve", "--workers", str(workers),
           "--models", str(versioned_models(tmp / "models")), "--port", "0",
           "--metrics-port", "0", "--port-file", str(port_file), "--insecure", *extra]  # fmt: skip
    log = tmp / "serve.log"
    with log.open("w") as out:  # a file, not a pipe: nobody has to read it while it runs
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        yield proc, port_file
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def channel(port: int) -> grpc.Channel:
    """A channel with its own TCP connection (no subchannel shared with other channels)."""
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def infer(
    ch: grpc.Channel, value: float, key: str = "", version: str = ""
) -> kpb.ModelInferResponse:
    x = np.full((1, 4), value, np.float32)
    req = kpb.ModelInferRequest(model_name="vec", model_version=version, id=f"r{value}")
    t = req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    del t
    req.raw_input_contents.append(x.tobytes())
    if key:
        req.parameters["idempotency_key"].string_param = key
    # wait_for_ready: a connection the kernel resets (it was queued on a worker that just died or
    # is being replaced) is retried, as every device's client does
    return kgrpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30, wait_for_ready=True)


def scrape(port: int) -> dict[str, float]:
    """Counter totals of one worker's metrics endpoint, by ``name{label=value,...}``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def total(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def _alive(pid: int) -> bool:
    """The process runs (a zombie waiting for its parent to reap it holds no sockets)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def ports(port_file: Path) -> dict[str, Any]:
    return json.loads(port_file.read_text())


def test_workers_share_one_port_idempotency_and_rollouts(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    database_url: str,  # noqa: F811
) -> None:
    stores = ("--stores", "redis", "--redis-url", redis_url, "--metadata-url", database_url)
    with serve_workers(tmp_path, *stores, "--rest-port", "0") as (proc, port_file):
        info = ports(port_file)
        assert len(set(info["pids"])) == 2 and len(set(info["metrics_ports"])) == 2
        for _ in range(8):  # the REST port is shared the same way (each GET a new connection)
            url = f"http://127.0.0.1:{info['rest_port']}/v2/health/ready"
            assert urllib.request.urlopen(url, timeout=10).status == 200
        channels = [channel(info["port"]) for _ in range(CONNECTIONS)]
        try:
            # Each connection lands on one worker; the kernel spreads them over both.
            for i, ch in enumerate(channels):
                assert infer(ch, float(i)).outputs[0].name == "y"
            per_worker = [
                total(scrape(p), "aiml021_gateway_requests_total") for p in info["metrics_ports"]
            ]
            assert sum(per_worker) == CONNECTIONS and min(per_worker) > 0, per_worker

            # One key sent on every connection at once: computed once, whatever worker each
            # copy reached; every copy gets the same answer.
            with ThreadPoolExecutor(CONNECTIONS) as pool:
                answers = list(pool.map(lambda ch: infer(ch, 7.0, key="k-once"), channels))
            assert {a.raw_output_contents[0] for a in answers} == {np.float32(28).tobytes()}
            outcomes = [scrape(p) for p in info["metrics_ports"]]
            computed = [
                m.get("aiml021_gateway_idempotency_total{outcome=computed}", 0.0)
                + m.get("aiml021_gateway_idempotency_total{outcome=cached}", 0.0)
                for m in outcomes
            ]
            assert sum(computed) == 1, [
                {k: v for k, v in m.items() if "idem" in k} for m in outcomes
            ]

            # A rollout set through one connection routes requests on every worker.
            deploy_pb2_grpc.DeployServiceStub(channels[0]).SetRollout(
                deploy_pb2.SetRolloutRequest(
                    rollout=deploy_pb2.Rollout(
                        model_name="vec", stable_version="2", candidate_version="1",
                        mode=deploy_pb2.ROLLOUT_MODE_CANARY, traffic_fraction=1.0,
                    )
                ),
                timeout=10,
            )  # fmt: skip
            deadline = time.monotonic() + 10
            while True:
                versions = {infer(ch, 1.0).model_version for ch in channels}
                if versions == {"1"} or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert versions == {"1"}, "every worker serves the canary"
        finally:
            for ch in channels:
                ch.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    out = (tmp_path / "serve.log").read_text()
    assert proc.returncode == 0, out
    assert out.count("signal received: draining") >= 3, out  # the supervisor and both workers


def test_a_worker_killed_is_replaced_and_the_other_keeps_serving(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    stores = ("--stores", "redis", "--redis-url", redis_url, "--metadata-url", "none")
    with serve_workers(tmp_path, *stores) as (proc, port_file):
        info = ports(port_file)
        victim = info["pids"][0]
        os.kill(victim, signal.SIGKILL)
        while _alive(victim):  # connections queued on it as it dies are reset: wait until gone
            time.sleep(0.01)
        # While it is down, new connections reach the survivor only.
        for i in range(8):
            with channel(info["port"]) as ch:
                answer = infer(ch, float(i)).raw_output_contents[0]
                assert answer == np.float32(4 * i).tobytes()
        deadline = time.monotonic() + 60
        while True:
            now = ports(port_file)
            if victim not in now["pids"] and None not in now["pids"]:
                break
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            assert proc.poll() is None
            time.sleep(0.2)
        assert now["pids"][1] == info["pids"][1]  # the other worker was never touched
        for p in now["metrics_ports"]:
            assert (
                "aiml021_gateway_requests_total"
                in urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=10)
                .read()
                .decode()
            )


def test_workers_with_memory_stores_are_refused_naming_the_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cloud", "serve", "--workers", "2", "--insecure", "--port", "0",
         "--models", str(tmp_path), "--metadata-url", "none"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "server.workers = 2 needs shared stores" in done.stderr, done.stderr


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_workers_below_one_are_refused(tmp_path: Path, workers: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cloud", "serve", "--workers", workers, "--insecure",
         "--models", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "server.workers" in done.stderr, done.stderr
