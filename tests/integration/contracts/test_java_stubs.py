"""The Java (lite) messages and gRPC stubs generated from proto/ compile against the gRPC Java
libraries Debian ships (libgrpc-java 1.41, libprotobuf-java 3.21: the versions of the Debian
protoc and grpc_java_plugin that generate them; `make system-deps` installs them). Maven Central
is not reachable from here, so Kotlin is generated but not compiled (see docs/integrations.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
JARS = Path("/usr/share/java")
NEEDED = ("protobuf", "grpc-api", "grpc-stub", "grpc-protobuf-lite", "guava")


def test_generated_java_stubs_compile(tmp_path: Path) -> None:
    missing = [j for j in NEEDED if not (JARS / f"{j}.jar").exists()]
    if missing or shutil.which("javac") is None:
        # make system-deps installs them; missing is a setup error, never a skip
        pytest.fail(f"javac or {missing} under {JARS} missing: run `make system-deps`")
    out = tmp_path / "mobile"
    subprocess.run(
        ["bash", "scripts/gen_mobile.sh", str(out), "--offline"], cwd=ROOT, check=True, timeout=300
    )
    java = out / "java"
    # google.rpc.Status (InferError.status) comes from the vendored googleapis proto
    subprocess.run(
        ["protoc", "-I", "third_party/googleapis", f"--java_out=lite:{java}",
         "google/rpc/status.proto"],
        cwd=ROOT, check=True, timeout=120,
    )  # fmt: skip
    annotations = sorted(JARS.glob("*annotation*1.3*.jar"))[:1]  # javax.annotation.Generated
    classpath = ":".join(str(JARS / f"{j}.jar") for j in NEEDED) + "".join(
        f":{a}" for a in annotations
    )
    sources = sorted(str(p) for p in java.rglob("*.java"))
    classes = tmp_path / "classes"
    proc = subprocess.run(
        ["javac", "-nowarn", "-d", str(classes), "-cp", classpath, *sources],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    for cls in (
        "com/aiml021/session/v1/SessionServiceGrpc.class",
        "com/aiml021/policy/v1/PolicyServiceGrpc.class",
        "com/inference/GRPCInferenceServiceGrpc.class",
        "com/aiml021/session/v1/InferFeaturesRequest.class",
    ):
        assert (classes / cls).exists(), cls
