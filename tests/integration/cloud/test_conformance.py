"""Conformance with Triton: ``scripts/conformance.py`` drives the gateway and a real Triton
Inference Server (nvidia-pytriton in .venv-triton) serving the same ONNX model through the
unchanged tritonclient.grpc and tritonclient.http; the answers must agree (values, shapes,
datatypes, error classes, what the statistics say)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud.core import spec_from_onnx
from scripts.conformance import compare
from scripts.triton import REPO_ROOT, TritonServer
from tests.support.tiny_models import tail_model

SCRIPT = REPO_ROOT / "scripts" / "conformance.py"


def _run(args: dict[str, object]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "run", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def _need_triton_venv() -> None:
    venv = Path(os.environ.get("AIML021_TRITON_VENV") or REPO_ROOT / ".venv-triton")
    if not (venv / "bin" / "python").exists():
        pytest.fail(f"{venv} missing: run scripts/setup_triton.sh (make setup does)")


async def test_gateway_and_triton_agree_through_both_tritonclients(tmp_path: Path) -> None:
    _need_triton_venv()
    models = tmp_path / "models"
    onnx = tail_model(models / "conf.onnx", seed=1)
    settings = GatewaySettings(
        models_dir=models,
        server={"port": 0},
        metrics={"port": None},
        rest={"port": 0},
        tls={"insecure": True},
        # Triton computes every request (no response cache configured): so does the gateway here.
        cache={"full_models": False},
    )
    spec = spec_from_onnx(onnx, name="conf", version="1")
    with TritonServer([spec], restricted_endpoints=[]) as triton:
        theirs = await asyncio.to_thread(
            _run,
            {
                "grpc": triton.grpc_target,
                "http": f"127.0.0.1:{triton.http_port}",
                "model": "conf__1",  # scripts.triton names a version's model <name>__<version>
                "version": "1",
            },
        )
    async with Gateway(settings) as gw:
        ours = await asyncio.to_thread(
            _run,
            {
                "grpc": f"127.0.0.1:{gw.port}",
                "http": f"127.0.0.1:{gw.rest_port}",
                "model": "conf",
                "version": "1",
            },
        )
    diffs = compare(ours, theirs)
    assert diffs == [], "\n".join(diffs)
    # Not vacuous: inference answered with logits, and errors are errors on both sides.
    for side in (ours, theirs):
        for client in ("grpc", "http"):
            ops = side[client]
            assert isinstance(ops, dict)
            assert ops["infer_3"]["shape"] == [3, 10]
            assert ops["error_wrong_shape"]["error"]
