"""Mobile teams' code generation works from buf.gen.yaml: Kotlin, Java (+ gRPC stubs), Obj-C."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVICES = {
    "session": "SessionService",
    "policy": "PolicyService",
    "registry": "ModelRegistryService",
    "telemetry": "TelemetryService",
    "cache": "CacheService",
    "deploy": "DeployService",
}


def test_offline_generation_produces_every_language_and_service(tmp_path: Path) -> None:
    out = tmp_path / "mobile"
    result = subprocess.run(
        [str(ROOT / "scripts/gen_mobile.sh"), str(out), "--offline"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    for area, service in SERVICES.items():
        java_dir = out / "java/com/aiml021" / area / "v1"
        stub = java_dir / f"{service}Grpc.java"
        assert stub.is_file(), f"missing gRPC Java stub {stub}"
        assert f'SERVICE_NAME = "aiml021.{area}.v1.{service}"' in stub.read_text()
        assert list((out / "kotlin/com/aiml021" / area / "v1").glob("*Kt.kt")), area
        assert list((out / "objc/aiml021" / area / "v1").glob("*.pbobjc.m")), area

    connect = (out / "java/com/aiml021/session/v1/SessionServiceGrpc.java").read_text()
    assert "MethodType.BIDI_STREAMING" in connect and '"Connect"' in connect
    triton = out / "java/com/inference/GRPCInferenceServiceGrpc.java"
    assert triton.is_file()
    assert 'SERVICE_NAME = "inference.GRPCInferenceService"' in triton.read_text()


def test_swift_is_declared_with_pinned_remote_plugins() -> None:
    template = (ROOT / "buf.gen.yaml").read_text()
    assert "remote: buf.build/apple/swift:v" in template
    assert "remote: buf.build/grpc/swift:v" in template
