"""A running edge agent follows its device class's bundle assignment in object storage and
hot-swaps its head without a restart, with real processes: moto's S3 server, the real gateway
(bundles synced from the bucket with ``cloud.artifacts.sync_models``) and an agent process
(``_follow_proc``) sending requests continuously while the assignment changes.

v1 -> v2 swaps with 0 failed requests, every cloud answer served by the tail of the version whose
head coded it; a tampered, unsigned, oversized, path-escaping or mis-signed assignment is refused
and the agent stays on v2; a version the gateway has no tail for is refused at Hello and the agent
keeps v2; a version that verifies and probes but fails in service (its head raises, or gives NaN)
on real inputs is rolled back to v2."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cloud.artifacts import ArtifactSettings, sync_models
from common.artifacts import (
    ArtifactStore,
    generate_signing_key,
    load_signing_key,
    pack_bundle,
    sign_bundle,
)
from common.bundle import load_bundle
from tests.support.edge_bundle import make_bundle
from tests.support.gateway import running_gateway
from tests.support.ports import free_port
from tests.support.s3 import S3Server, run_s3

NAME = "synthetic_branchy"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with run_s3() as server:
        yield server


def versioned(root: Path, version: str, seed: int) -> Path:
    """The synthetic bundle (early exits never confident: most requests go to the cloud)
    declared as ``version``; other seeds give other weights, so other answers."""
    make_bundle(root, thresholds=(0.99, 0.99, 0.0), seed=seed)
    manifest = root / "manifest.json"
    data = json.loads(manifest.read_text())
    data["version"] = version
    manifest.write_text(json.dumps(data))
    load_bundle(root, verify=True)
    return root


def fails_in_service(root: Path, how: str = "raises") -> Path:
    """Make the head's first segment fail on real inputs only, fine on the probe's zeros:
    ``raises``: it gathers at index 1000 x max(input), out of range for any real image;
    ``nan``: exit 1 adds sqrt(-max(input)), NaN for any real image."""
    path = root / "stage1.onnx"
    model = onnx.load(str(path))
    g = model.graph
    for node in g.node:
        node.output[:] = ["exit1_raw" if o == "exit1_logits" else o for o in node.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([1000.0], np.float32), "k1000"),
            numpy_helper.from_array(np.zeros([1], np.float32), "table"),
        ]
    )
    g.node.append(helper.make_node("ReduceMax", ["input"], ["mx"], keepdims=0))
    if how == "raises":
        g.node.extend(
            [
                helper.make_node("Mul", ["mx", "k1000"], ["scaled"]),
                helper.make_node("Cast", ["scaled"], ["idx"], to=TensorProto.INT64),
                helper.make_node("Gather", ["table", "idx"], ["picked"]),
            ]
        )
    else:
        g.node.extend(
            [
                helper.make_node("Neg", ["mx"], ["negative"]),
                helper.make_node("Sqrt", ["negative"], ["picked"]),
            ]
        )
    g.node.append(helper.make_node("Add", ["exit1_raw", "picked"], ["exit1_logits"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    bundle = load_bundle(root, verify=False)
    bundle.refresh_files()
    return root


class Agent:
    """The agent process and what it printed."""

    def __init__(self, settings: Path, tmp: Path) -> None:
        self._stderr = (tmp / "agent.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.edge_agent._follow_proc",
             "--settings", str(settings)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, env=dict(os.environ),
        )  # fmt: skip
        self.lines: list[str] = []
        self.metrics: dict[str, Any] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(("METRICS ", "DONE ")):
                self.metrics = json.loads(line.split(" ", 1)[1])
            if not line.startswith("METRICS "):
                self.lines.append(line.strip())

    def answers(self) -> list[tuple[str, str, str]]:
        """(key, route, bundle version) of every answer so far."""
        return [tuple(x.split()[1:4]) for x in self.lines if x.startswith("ANS ")]  # type: ignore[misc]

    def more(self, counter: str, than: int) -> bool:
        """True once the agent's bundle counter ``counter`` is over ``than``."""
        return int(self.metrics.get(counter, 0)) > than

    def failures(self) -> list[str]:
        return [x for x in self.lines if x.startswith("FAIL ")]

    async def until(self, what: str, pred: Callable[[], bool], within: float = 120) -> None:
        deadline = time.monotonic() + within
        while not pred():
            assert self.proc.poll() is None, f"agent exited ({self.proc.returncode})"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.metrics}"
            await asyncio.sleep(0.1)

    async def answers_after(self, n: int) -> None:
        """Wait for ``n`` more answers."""
        start = len(self.answers())
        await self.until(f"{n} answers", lambda: len(self.answers()) >= start + n)

    async def stop(self) -> None:
        """Close its stdin and wait for it to finish (the loop serves the gateway meanwhile:
        the requests still in flight get their cloud answers)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        await asyncio.to_thread(self._reader.join, 10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()


def _put(s3: S3Server, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def _assign(s3: S3Server, bucket: str, version: str) -> None:
    body = json.dumps({"name": NAME, "version": version}).encode()
    _put(s3, bucket, "assignments/cam.json", body)


def _hostile_versions(s3: S3Server, store: ArtifactStore, tmp: Path, signing: Path) -> None:
    """Versions 3 and 6-10, each refused by the device for another reason."""
    key = load_signing_key(signing)
    b = store.bucket
    # 3: a genuine, published bundle whose archive was changed afterwards
    store.publish(versioned(tmp / "src-3", "3", seed=3), key)
    tar_key = f"bundles/{NAME}/3/bundle.tar"
    good = s3.client().get_object(Bucket=b, Key=tar_key)["Body"].read()
    _put(s3, b, tar_key, good[:-100] + b"x" * 100)
    # 6: an archive far over the device's download limit (refused before it is downloaded)
    _put(s3, b, f"bundles/{NAME}/6/bundle.tar", b"\0" * (3 << 20))
    _put(s3, b, f"bundles/{NAME}/6/bundle.tar.sig", b"s" * 64)
    # 7: validly signed, but its manifest lists a file outside the bundle directory
    esc = versioned(tmp / "src-7", "7", seed=7)
    manifest = json.loads((esc / "manifest.json").read_text())
    manifest["files"]["../../../outside.onnx"] = manifest["files"]["stage1.onnx"]
    (esc / "manifest.json").write_text(json.dumps(manifest))
    archive = pack_bundle(esc)
    _put(s3, b, f"bundles/{NAME}/7/bundle.tar", archive)
    _put(s3, b, f"bundles/{NAME}/7/bundle.tar.sig", sign_bundle(key, NAME, "7", archive))
    # 8: validly signed archive with a member that escapes the bundle
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../evil.onnx")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = buf.getvalue()
    _put(s3, b, f"bundles/{NAME}/8/bundle.tar", archive)
    _put(s3, b, f"bundles/{NAME}/8/bundle.tar.sig", sign_bundle(key, NAME, "8", archive))
    # 9: a genuine bundle with one bit of its signature flipped
    store.publish(versioned(tmp / "src-9", "9", seed=9), key)
    sig_key = f"bundles/{NAME}/9/bundle.tar.sig"
    sig = bytearray(s3.client().get_object(Bucket=b, Key=sig_key)["Body"].read())
    sig[10] ^= 1
    _put(s3, b, sig_key, bytes(sig))
    # 10: an archive without a signature
    _put(s3, b, f"bundles/{NAME}/10/bundle.tar", pack_bundle(tmp / "src-9"))


def _settings(tmp: Path, gateway: str, store: ArtifactStore, endpoint: str) -> Path:
    """The agent's settings file: shipped with version 1, following class ``cam``."""
    settings = {
        "bundle": str(tmp / "src-1"),
        "gateway": gateway,
        "device_id": "cam-1",
        "device_class": "cam",
        "tls": {"insecure": True},
        "session": {"backoff_initial_s": 0.05, "backoff_max_s": 0.5},
        "routing": {"sla_ms": 10000},
        # every request runs a head (inputs repeat: cache hits would answer without one)
        "cache": {"entries": 0},
        "artifacts": {
            "bucket": store.bucket,
            "endpoint": endpoint,
            "verify_key": str(tmp / "sign.pub"),
            "root": str(tmp / "device"),
            "check_interval_s": 0.3,
            "max_bundle_bytes": 1 << 20,
        },
    }
    (tmp / "agent.json").write_text(json.dumps(settings))
    return tmp / "agent.json"


async def test_running_agent_follows_assignment_swaps_refuses_and_rolls_back(
    s3: S3Server, tmp_path: Path
) -> None:
    generate_signing_key(tmp_path / "sign.key", tmp_path / "sign.pub")
    key = load_signing_key(tmp_path / "sign.key")
    store = ArtifactStore(s3.new_bucket(), s3.endpoint)
    for version, seed in (("1", 0), ("2", 1)):
        store.publish(versioned(tmp_path / f"src-{version}", version, seed), key)
    store.publish(fails_in_service(versioned(tmp_path / "src-4", "4", seed=4)), key)
    store.publish(fails_in_service(versioned(tmp_path / "src-11", "11", seed=11), "nan"), key)
    models = tmp_path / "models"
    art = ArtifactSettings(bucket=store.bucket, endpoint=s3.endpoint,
                           verify_key=tmp_path / "sign.pub")  # fmt: skip
    await asyncio.to_thread(sync_models, art, models)  # the gateway serves 1, 2, 4 and 11
    _assign(s3, store.bucket, "1")
    async with running_gateway(models) as gw:
        agent = Agent(_settings(tmp_path, gw.address, store, s3.endpoint), tmp_path)
        try:
            await agent.until("READY", lambda: "READY" in agent.lines, 180)
            await agent.answers_after(20)
            assert {v for _, _, v in agent.answers()} == {"1"}

            _assign(s3, store.bucket, "2")  # the swap, under load
            await agent.until("v2 answers", lambda: agent.answers()[-1][2] == "2")
            await agent.answers_after(20)
            swapped_at = len(agent.answers())

            _hostile_versions(s3, store, tmp_path, tmp_path / "sign.key")
            for version in ("3", "6", "7", "8", "9", "10"):
                rejected: int = agent.metrics.get("rejected", 0)
                _assign(s3, store.bucket, version)
                await agent.until(
                    f"v{version} rejected", functools.partial(agent.more, "rejected", rejected)
                )
                await agent.answers_after(5)
            assert not (tmp_path / "outside.onnx").exists()
            assert not any(p.name == "evil.onnx" for p in tmp_path.rglob("*"))

            # published after the gateway started: it has no tail for 5 and refuses the Hello
            store.publish(versioned(tmp_path / "src-5", "5", seed=5), key)
            _assign(s3, store.bucket, "5")
            await agent.until("v5 refused", lambda: agent.metrics.get("refused", 0) >= 1)
            await agent.answers_after(20)

            # verifies, probes, is welcomed, then its head fails on real inputs: back to 2
            _assign(s3, store.bucket, "4")
            await agent.until("v4 rolled back", lambda: agent.metrics.get("rollbacks", 0) >= 1)
            await agent.answers_after(20)

            # its first exit gives NaN on real inputs (finite on zeros): back to 2 as well
            _assign(s3, store.bucket, "11")
            await agent.until("v11 rolled back", lambda: agent.metrics.get("rollbacks", 0) >= 2)
            await agent.answers_after(20)
        finally:
            await agent.stop()
        log = (tmp_path / "agent.log").read_text()
        (tmp_path / "agent.out").write_text("\n".join(agent.lines))  # kept for a failure's reader

    answers = agent.answers()
    assert agent.failures() == [], log[-3000:]
    assert {v for _, _, v in answers} == {"1", "2"}
    assert all(v == "2" for _, _, v in answers[swapped_at:])
    m = agent.metrics
    assert m["current"] == f"{NAME}-2" and m["rollbacks"] == 2 and m["refused"] == 1
    assert m["rejected"] == 6 and m["swaps"] == 4  # 1 at start, 2, then 4 and 11 rolled back
    # every cloud answer came from the tail of the version whose head coded its features
    served = {r.idempotency_key: r.model_version for r in gw.records if r.status == "OK"}
    cloud = [(k, v) for k, route, v in answers if route == "cloud"]
    assert len(cloud) > 50
    assert all(served[k] == v for k, v in cloud)
    assert {v for _, v in cloud} == {"1", "2"}
    # the session said Hello again at each change, declaring the version its head runs
    declared = [",".join(b.version for b in h.bundles) for h in gw.frames.hellos]
    changes = [v for i, v in enumerate(declared) if i == 0 or declared[i - 1] != v]
    assert changes == ["1", "2", "5", "2", "4", "2", "11", "2"]
    for why in ("signature does not verify", "not downloaded", "outside the bundle",
                "escapes the bundle", "failed in service", "no tail for head",
                "exit exit1 gives non-finite outputs"):  # fmt: skip
        assert why in log, why


async def test_a_gateway_restarted_without_the_running_version_gets_the_last_known_good(
    s3: S3Server, tmp_path: Path
) -> None:
    generate_signing_key(tmp_path / "sign.key", tmp_path / "sign.pub")
    key = load_signing_key(tmp_path / "sign.key")
    store = ArtifactStore(s3.new_bucket(), s3.endpoint)
    for version, seed in (("1", 0), ("2", 1)):
        store.publish(versioned(tmp_path / f"src-{version}", version, seed), key)
    both, only_1 = tmp_path / "models", tmp_path / "models-1"
    art = ArtifactSettings(bucket=store.bucket, endpoint=s3.endpoint,
                           verify_key=tmp_path / "sign.pub")  # fmt: skip
    await asyncio.to_thread(sync_models, art, both)
    shutil.copytree(both, only_1)
    shutil.rmtree(only_1 / f"{NAME}-2")
    _assign(s3, store.bucket, "1")
    port = free_port()
    async with running_gateway(both, port) as gw:
        agent = Agent(_settings(tmp_path, gw.address, store, s3.endpoint), tmp_path)
        try:
            await agent.until("READY", lambda: "READY" in agent.lines, 180)
            _assign(s3, store.bucket, "2")
            await agent.until("v2", lambda: agent.metrics.get("current") == f"{NAME}-2")
            await agent.answers_after(20)
        except BaseException:
            await agent.stop()
            raise
    try:
        # the same address, now without a tail for 2: the agent goes back to 1
        async with running_gateway(only_1, port) as gw:
            await agent.until("rolled back", lambda: agent.more("rollbacks", 0))
            await agent.answers_after(20)
            await agent.until("v1 answers", lambda: agent.answers()[-1][2] == "1")
            at = len(agent.answers())
            await agent.answers_after(20)
    finally:
        await agent.stop()
    log = (tmp_path / "agent.log").read_text()
    (tmp_path / "agent.out").write_text("\n".join(agent.lines))
    assert agent.failures() == [], log[-3000:]
    assert agent.metrics["current"] == f"{NAME}-1" and agent.metrics["rollbacks"] == 1
    after = agent.answers()[at:]
    assert after and all(v == "1" for _, _, v in after)
    served = {r.idempotency_key: r.model_version for r in gw.records if r.status == "OK"}
    assert all(served[k] == "1" for k, route, _ in after if route == "cloud")
    assert "gateway refuses synthetic_branchy 2" in log
