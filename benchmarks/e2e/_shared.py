"""Pieces the demo, the cloud host and the device load generator share: the gateway as a child
process, Prometheus sums, the Fashion-MNIST test images and the cloud-only request path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.e2e.report import Outcome

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "fmnist_branchy"


@contextlib.contextmanager
def gateway_process(
    workdir: Path, models: Path, tls_dir: Path, *, result_cache: bool = True, timeout_s: float = 90
) -> Iterator[dict[str, int]]:
    """``aiml021 serve`` (mTLS, SQLite metadata in ``workdir``) in its own process group; yields
    its ports and pid and stops the whole group on exit."""
    port_file = workdir / "gateway_ports.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if not result_cache:  # runs that repeat images would otherwise be answered from memory
        env["AIML021_GATEWAY_CACHE__FULL_MODELS"] = "false"
    with open(workdir / "gateway.log", "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--host", "127.0.0.1",
             "--port", "0", "--metrics-port", "0", "--port-file", str(port_file),
             "--tls-dir", str(tls_dir), "--metadata-url", f"sqlite:///{workdir / 'metadata.sqlite3'}"],
            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if port_file.exists() and port_file.stat().st_size:
                with contextlib.suppress(json.JSONDecodeError):
                    ports = json.loads(port_file.read_text())
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "gateway.log").read_text()[-3000:]
                raise RuntimeError(f"gateway did not start:\n{log}")
            time.sleep(0.1)
        yield {**ports, "pid": proc.pid}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def metric_sum(port: int, metric: str) -> float:
    """Sum of every sample of ``metric`` (all label sets) on a Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    pattern = re.compile(rf"{re.escape(metric)}(\{{[^}}]*\}})?\s+([0-9.eE+-]+)")
    return sum(float(m.group(2)) for line in text.splitlines() if (m := pattern.match(line)))


def load_test_images(
    limit: int | None = None, offset: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST test images and labels (Debian's package, else the committed slice),
    ``limit`` of them from ``offset`` (wrapping around), and where they came from."""
    from common.data import load_fashion_mnist, load_slice
    from common.errors import AimlError

    try:
        images, labels = load_fashion_mnist("test")
        source = "Fashion-MNIST test set (Debian dataset-fashion-mnist)"
    except (AimlError, OSError):
        images, labels = load_slice(ROOT / "models" / "data" / "fmnist_test_slice.npz")
        source = "committed Fashion-MNIST test slice (models/data)"
    idx = (np.arange(limit or len(images)) + offset) % len(images)
    return images[idx], labels[idx], source


class CloudOnly:
    """Cloud-only through our gateway: the preprocessed input as a raw float32 codec frame to
    the full model, on one session stream. ``async with CloudOnly(...) as c: await c.infer(...)``."""

    def __init__(self, target: str, tls_dir: Path | None, device_id: str) -> None:
        from common.bundle import load_bundle
        from edge_agent import EdgeSettings
        from edge_agent._stream import SessionClient, channel_credentials

        self.bundle = load_bundle(BUNDLE)
        settings = EdgeSettings(
            gateway=target, device_id=device_id, tls={"dir": tls_dir, "server_name": "localhost"}
        )
        self.client = SessionClient(target, settings, credentials=channel_credentials(settings))

    async def __aenter__(self) -> CloudOnly:
        self.client.start()
        await self.client.wait_connected(15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()

    async def infer(self, index: int, image: np.ndarray, label: int) -> Outcome:
        from edge_agent._convert import CloudAnswer, OutboundRequest
        from edge_agent._features import encode_features

        t0 = time.perf_counter()
        features = encode_features(self.bundle.preprocess(image[None]), "raw")
        answer: Any = await self.client.submit(OutboundRequest(
            request_id=uuid.uuid4().hex, idempotency_key=uuid.uuid4().hex,
            model_name=self.bundle.name, model_version="", cut_point="", features=features,
            deadline=time.time() + 30, digest=hashlib.sha256(features.payload).digest(),
        ))  # fmt: skip
        latency = time.perf_counter() - t0
        if not isinstance(answer, CloudAnswer):
            return Outcome(index, label, -1, "error", latency, error=str(answer))
        return Outcome(
            index=index, label=label, predicted=answer.top_class, route="cloud",
            latency_s=latency, bytes_up=len(features.payload),
            cloud_compute_s=answer.cloud_compute_ms / 1000,
        )  # fmt: skip
