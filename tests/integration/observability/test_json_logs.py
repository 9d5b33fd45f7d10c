"""``aiml021 --log-format json --access-log serve``: every line the gateway process writes is a
JSON object, and a request leaves one access line with its id, a pseudonymous device, route,
decision and status."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc

ROOT = Path(__file__).resolve().parents[3]


def test_the_gateway_process_writes_json_lines_with_an_access_line_per_request(
    tmp_path: Path,
) -> None:
    port_file = tmp_path / "ports.json"
    cmd = [sys.executable, "-m", "common.cli", "--log-format", "json", "--access-log", "serve",
           "--models", str(ROOT / "models"), "--insecure", "--port", "0", "--metrics-port",
           "0", "--port-file", str(port_file), "--metadata-url", "none"]  # fmt: skip
    log = tmp_path / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ports: dict[str, int] = {}
        while not ports:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(OSError, ValueError):
                ports = json.loads(port_file.read_text())
            time.sleep(0.05)
        x = np.zeros((1, 1, 28, 28), np.float32)
        req = kpb.ModelInferRequest(model_name="fmnist_branchy", id="json-log-1")
        req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(f"127.0.0.1:{ports['port']}") as ch:
            kgrpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    (access,) = [x for x in lines if x["logger"] == "aiml021.access"]
    assert access["request_id"] == "json-log-1" and access["status"] == "OK"
    assert access["api"] == "infer" and access["route"] == "cloud"
    assert access["decision"] == "infer" and access["model"] == "fmnist_branchy"
    assert "device" not in access  # plaintext: no certificate, no device to name
    assert any("gateway serving" in x["message"] for x in lines)
