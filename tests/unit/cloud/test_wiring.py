"""Wiring of the gateway's parts without a server: module structure, settings from flags and
env, the result cache and atomic idempotency in the data plane, and core records in SQL."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud.batching import BatcherConfig, DynamicBatching
from cloud.cli import register, settings_from_args
from cloud.core import (
    Backend,
    DataPlane,
    InferenceRequest,
    ModelKey,
    ModelRepository,
    ModelSpec,
    RequestRecord,
    TelemetryEvent,
    TensorSpec,
    content_hash,
)
from cloud.stores import (
    MemoryIdempotencyStore,
    MemoryResultCache,
    MetadataWriter,
    SqliteMetadataBackend,
)
from common.errors import FailedPrecondition, Unavailable

ROOT = Path(__file__).resolve().parents[3]

FULL = ModelSpec(
    "m", "1", Path("m.onnx"), (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)),), 8,
)  # fmt: skip
TAIL = ModelSpec(
    "m.cut1", "1", Path("t.onnx"), (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)),), 8, bundle="m", cut_point="cut1",
)  # fmt: skip


class _Slow(Backend):
    """Doubles its input after ``delay`` seconds; counts calls; fails while ``fail`` is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = False

    async def load(self, model: ModelSpec) -> None: ...

    async def unload(self, key: ModelKey) -> None: ...

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise Unavailable("engine down")
        return {"y": inputs["x"] * 2}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


async def _plane(backend: Backend, **kw: object) -> DataPlane:
    batchers = DynamicBatching(BatcherConfig(max_batch_size=8))
    dp = DataPlane(ModelRepository([FULL, TAIL]), backend, batchers, **kw)  # type: ignore[arg-type]
    await dp.start()
    return dp


def test_every_cloud_package_imports_first_in_a_fresh_interpreter() -> None:
    mods = ["cloud.core", "cloud.batching", "cloud.stores", "cloud.rest", "cloud.grpc",
            "cloud.app"]  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, "-c", f"import {m}"], cwd=ROOT, stderr=subprocess.PIPE)
        for m in mods
    ]
    lazy = (
        "import sys, cloud.backends\n"
        "assert 'cloud.backends.triton' not in sys.modules, 'TritonBackend must load lazily'\n"
        "assert cloud.backends.TritonBackend.__name__ == 'TritonBackend'\n"
    )
    procs.append(subprocess.Popen([sys.executable, "-c", lazy], cwd=ROOT, stderr=subprocess.PIPE))
    core_alone = (
        "import sys, cloud.core\n"
        "outer = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'starlette')\n"
        "               or m.startswith(('cloud.app', 'cloud.grpc', 'cloud.rest', 'cloud.stores')))\n"
        "assert not outer, f'cloud.core pulled in {outer}'\n"
        "assert cloud.Gateway.__name__ == 'Gateway'  # the composition root loads on demand\n"
    )
    procs.append(
        subprocess.Popen([sys.executable, "-c", core_alone], cwd=ROOT, stderr=subprocess.PIPE)
    )
    for m, p in zip([*mods, "lazy triton", "core alone"], procs, strict=True):
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, (m, err.decode()[-2000:])


def test_serve_flags_and_env_select_backends_and_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    monkeypatch.setenv("AIML021_GATEWAY_STORES__METADATA_URL", "postgresql://db/x")
    monkeypatch.setenv("AIML021_GATEWAY_CACHE__TAIL_SEGMENTS", "true")
    gw = settings_from_args(
        parser.parse_args(
            [
                "serve",
                "--backend",
                "triton",
                "--triton-url",
                "t:8001",
                "--stores",
                "redis",
                "--redis-url",
                "redis://r:6379/0",
                "--insecure",
            ]
        )
    )
    assert (gw.backend, gw.triton.url, gw.tls.insecure, gw.cache.tail_segments) == (
        "triton", "t:8001", True, True
    )  # fmt: skip
    st = gw.stores
    assert (st.backend, st.redis_url, st.metadata_url) == (
        "redis", "redis://r:6379/0", "postgresql://db/x"
    )  # fmt: skip
    gw = settings_from_args(parser.parse_args(["serve", "--metadata-url", "none"]))
    assert (gw.backend, gw.stores.backend, gw.stores.metadata_url, gw.control_services) == (
        "onnxruntime", "memory", "none", True
    )  # fmt: skip


async def test_gateway_builds_a_triton_backend_from_settings(tmp_path: Path) -> None:
    from cloud import Gateway
    from cloud._settings import GatewaySettings
    from cloud.backends import PipelineBackend, TritonBackend

    settings = GatewaySettings(
        models_dir=tmp_path, backend="triton", triton={"url": "127.0.0.1:1", "infer_timeout_s": 3}
    )
    gw = Gateway(settings)
    # pipelines (pipeline.json) are served beside the engine's models, their stages on onnxruntime
    backend = gw.dataplane.backend
    assert isinstance(backend, PipelineBackend) and isinstance(backend.inner, TritonBackend)
    assert backend.inner._settings == settings.triton  # the section, every key of it
    await backend.close()


async def test_result_cache_full_models_only_unless_tails_enabled() -> None:
    backend = _Slow()
    dp = await _plane(backend, result_cache=MemoryResultCache())
    x = {"x": np.arange(4, dtype=np.float32)[None]}
    a = await dp.infer(InferenceRequest("m", "", x))
    b = await dp.infer(InferenceRequest("m", "", {"x": x["x"].copy()}))
    assert not a.cached and b.cached and backend.calls == 1
    assert (b.model_name, b.model_version) == ("m", "1")
    np.testing.assert_array_equal(a.outputs["y"], b.outputs["y"])
    await dp.infer(InferenceRequest("m.cut1", "", x))
    await dp.infer(InferenceRequest("m.cut1", "", x))
    assert backend.calls == 3  # tails are computed every time by default
    m = dp.metrics
    assert m.cache_requests.labels("m", "hit")._value.get() == 1
    await dp.close()
    backend = _Slow()
    dp = await _plane(backend, result_cache=MemoryResultCache(), cache_tail_segments=True)
    for _ in range(2):
        await dp.infer(InferenceRequest("m.cut1", "", x))
    assert backend.calls == 1
    await dp.close()
    assert content_hash(x) != content_hash(x, ("y",)) != content_hash({"x": x["x"] + 1})


async def test_idempotent_failure_releases_the_key_and_retry_computes() -> None:
    backend = _Slow()
    dp = await _plane(backend, idempotency=MemoryIdempotencyStore())
    req = InferenceRequest("m", "", {"x": np.ones((1, 4), np.float32)}, idempotency_key="k",
                           payload_digest=b"d")  # fmt: skip
    backend.fail = True
    with pytest.raises(Unavailable):
        await dp.infer(req)
    backend.fail = False
    ok = await dp.infer(req)
    again = await dp.infer(req)
    assert not ok.cached and again.cached and backend.calls == 2
    with pytest.raises(FailedPrecondition):
        await dp.infer(
            InferenceRequest("m", "", req.inputs, idempotency_key="k", payload_digest=b"e")
        )
    assert dp.metrics.idempotency.labels("computed")._value.get() == 1
    assert dp.metrics.idempotency.labels("stored")._value.get() == 1
    await dp.close()


async def test_cancel_while_computing_still_stores_the_result() -> None:
    """A client that goes away after compute started must not make a retry compute again."""
    backend = _Slow(delay=0.2)
    dp = await _plane(backend, idempotency=MemoryIdempotencyStore())
    req = InferenceRequest("m", "", {"x": np.ones((1, 4), np.float32)}, idempotency_key="k",
                           payload_digest=b"d")  # fmt: skip
    first = dp.submit(req)
    await asyncio.sleep(0.05)  # taken into a batch and computing
    first.cancel()
    again = await dp.infer(req)
    assert backend.calls == 1 and again.cached
    await dp.close()


async def test_cancel_while_queued_withdraws_and_releases() -> None:
    backend = _Slow(delay=0.2)
    dp = DataPlane(ModelRepository([FULL]), backend, DynamicBatching(BatcherConfig(max_batch_size=1)),
                   idempotency=MemoryIdempotencyStore())  # fmt: skip
    await dp.start()
    x = {"x": np.ones((1, 4), np.float32)}
    blocker = dp.submit(InferenceRequest("m", "", x))
    await asyncio.sleep(0.02)
    queued = dp.submit(InferenceRequest("m", "", x, idempotency_key="q", payload_digest=b"d"))
    await asyncio.sleep(0.02)
    queued.cancel()
    await blocker
    result = await dp.infer(InferenceRequest("m", "", x, idempotency_key="q", payload_digest=b"d"))
    assert not result.cached and backend.calls == 2
    await dp.close()


async def test_core_records_land_in_sql_with_every_field(tmp_path: Path) -> None:
    db = SqliteMetadataBackend(tmp_path / "m.sqlite3")
    writer = MetadataWriter(db, flush_interval_s=0.01)
    await writer.start()
    writer(
        RequestRecord(
            request_id="r1", device_id="d", model_name="m", model_version="1", route="cloud",
            api="session", status="OK", codec="q4|ans", idempotency_key="k", bytes_in=100, compute_s=0.002,
            session_id="s1", deadline_ms=150.0, offload_reason="deferred", top_class=7,
            confidence=0.9, bytes_out=40, latency_ms=3.0,
        )
    )  # fmt: skip
    writer(TelemetryEvent("d", "e1", "m", "edge", 0, 0.01, 10, 0))
    await writer.stop()
    rows = await db.query(
        "SELECT q.session_id, q.deadline_ms, q.offload_reason, r.top_class, r.confidence, "
        "r.latency_ms, c.bytes_out FROM requests q JOIN results r USING (device_id, request_id) "
        "JOIN costs c USING (device_id, request_id) WHERE request_id = 'r1'"
    )
    assert rows == [("s1", 150.0, "deferred", 7, 0.9, 3.0, 40)]
    assert await db.query("SELECT request_id, route, api FROM requests ORDER BY request_id") == [
        ("e1", "edge", ""),  # a device's report: its route, no API
        ("r1", "cloud", "session"),
    ]
    await db.close()


async def test_router_in_the_data_plane_shadows_and_rolls_back() -> None:
    """Requests through ``DataPlane.submit`` (what every transport calls) get rollouts."""
    from cloud.core import (
        RollbackPolicy,
        Rollout,
        RolloutManager,
        RolloutMode,
        RolloutRouter,
        RolloutState,
    )

    class _FailV2(_Slow):
        async def infer(
            self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
        ) -> dict[str, np.ndarray]:
            if key.version == "2":
                raise Unavailable("candidate broken")
            return await super().infer(key, inputs, outputs)

    v2 = dataclasses.replace(FULL, version="2")
    dp = DataPlane(ModelRepository([FULL, v2]), _FailV2(), DynamicBatching())
    await dp.start()
    manager = RolloutManager(dp.model_ready)
    router = RolloutRouter(dp, manager)
    dp.router = router
    x = {"x": np.ones((1, 4), np.float32)}
    manager.set(Rollout("m", "1", "2", RolloutMode.SHADOW, traffic_fraction=1.0))
    r = await dp.submit(InferenceRequest("m", "", x, request_id="a"))
    await router.drain()
    assert r.model_version == "1"
    _, stats = manager.get("m")
    assert stats.candidate_requests == 1 and stats.candidate_errors == 1
    policy = RollbackPolicy(max_error_rate=0.1, min_requests=3)
    manager.set(Rollout("m", "1", "2", RolloutMode.CANARY, traffic_fraction=1.0, rollback=policy))
    for i in range(3):
        with pytest.raises(Unavailable):
            await dp.submit(InferenceRequest("m", "", x, request_id=f"c{i}"))
    assert manager.get("m")[0].state is RolloutState.ROLLED_BACK
    after = await dp.submit(InferenceRequest("m", "", x, request_id="z"))
    assert after.model_version == "1"
    await router.close()
    await dp.close()
