"""`aiml021 serve --models DIR` on a Triton model repository, as a process: the Triton-layout
model is served under its integer version, a model it cannot serve is an ERROR naming its
config.pbtxt, a directory that is no model a WARNING — never "serving 0 model(s)" in silence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from tests.support.gateway import vector_model

CONFIG = """
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def test_serve_reads_a_triton_repository_and_names_what_it_cannot_serve(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    vector_model(repo / "vec" / "1" / "model.onnx")
    (repo / "vec" / "config.pbtxt").write_text(CONFIG)
    vector_model(repo / "broken" / "1" / "model.onnx")
    (repo / "broken" / "config.pbtxt").write_text(CONFIG.replace("max_batch_size: 4", ""))
    (repo / "notes").mkdir()
    port_file = tmp_path / "ports.json"
    cmd = [sys.executable, "-m", "cloud", "serve", "--models", str(repo), "--port", "0",
           "--metrics-port", "0", "--rest-port", "0", "--port-file", str(port_file),
           "--insecure", "--metadata-url", "none"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(400):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        port = json.loads(port_file.read_text())["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            ready = {
                v: stub.ModelReady(pb.ModelReadyRequest(name="vec", version=v), timeout=5).ready
                for v in ("1", "2")
            }
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="vec"), timeout=5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ready == {"1": True, "2": False}
    assert list(meta.versions) == ["1"]
    assert "serving 1 model(s)" in out
    errors = [line for line in out.splitlines() if " ERROR " in line]
    assert len(errors) == 1, out
    assert str(repo / "broken" / "config.pbtxt") in errors[0] and "max_batch_size 0" in errors[0]
    assert any(" WARNING " in line and str(repo / "notes") in line for line in out.splitlines())
