"""`aiml021 serve` as a process: binds port 0, writes the port file, serves every service on one
port (listed by reflection), writes metadata to the configured store, drains on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.integration.cloud._gateway import models_dir


def test_serve_process_health_and_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "ports.json"
    cmd = [sys.executable, "-m", "cloud", "serve", "--models", str(models_dir(tmp_path)),
           "--port", "0", "--metrics-port", "0", "--port-file", str(port_file), "--insecure",
           "--metadata-url", f"sqlite:///{tmp_path / 'meta.sqlite3'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(200):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        with grpc.insecure_channel(f"127.0.0.1:{ports['port']}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            (answer,) = refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {x.name for x in answer.list_services_response.service}
        assert {
            "aiml021.session.v1.SessionService",
            "inference.GRPCInferenceService",
            "aiml021.registry.v1.ModelRegistryService",
            "aiml021.deploy.v1.DeployService",
            "aiml021.cache.v1.CacheService",
            "aiml021.telemetry.v1.TelemetryService",
            "aiml021.policy.v1.PolicyService",
        } <= names
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "WITHOUT TLS" in out and "draining" in out
    assert (tmp_path / "meta.sqlite3").exists()


def test_serve_process_from_a_config_file_with_env_over_it(tmp_path: Path) -> None:
    """Everything from ``--config`` (TOML) but one key the environment overrides; metrics off
    through the env (TOML has no null)."""
    port_file = tmp_path / "ports.json"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'models_dir = "{models_dir(tmp_path)}"\ncontrol_services = false\n'
        f'[server]\nport = 0\nport_file = "{tmp_path / "wrong.json"}"\n'
        f'[tls]\ninsecure = true\n[stores]\nmetadata_url = "none"\n'
    )
    env = {
        **os.environ,
        "AIML021_GATEWAY_SERVER__PORT_FILE": str(port_file),
        "AIML021_GATEWAY_METRICS__PORT": "null",
    }
    cmd = [sys.executable, "-m", "cloud", "serve", "--config", str(config)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        for _ in range(200):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        ports = json.loads(port_file.read_text())
        assert ports["metrics_port"] is None and not (tmp_path / "wrong.json").exists()
        with grpc.insecure_channel(f"127.0.0.1:{ports['port']}") as ch:
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            (answer,) = refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = {x.name for x in answer.list_services_response.service}
        assert "aiml021.session.v1.SessionService" in names
        assert "aiml021.deploy.v1.DeployService" not in names  # control_services = false
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out


def test_serve_refuses_a_misspelt_config_key_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\nprot = 0\n")
    done = subprocess.run(
        [sys.executable, "-m", "cloud", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "unknown key 'server.prot'" in done.stderr
