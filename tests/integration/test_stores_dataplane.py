"""Two gateway data planes sharing one real Redis: a repeated idempotency key computes once;
metadata from the data plane lands in the SQL store."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from cloud.backends import Backend, OnnxRuntimeBackend
from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    DataPlane,
    InferenceRequest,
    ModelKey,
    ModelRepository,
    ModelSpec,
    spec_from_onnx,
)
from cloud.stores import MetadataWriter, RedisIdempotencyStore, SqliteMetadataBackend
from common.errors import FailedPrecondition
from tests.integration._services import redis_server, redis_url
from tests.support.tiny_models import tail_model

__all__ = ["redis_server", "redis_url"]  # fixtures


class CountingBackend(Backend):
    """onnxruntime, counting the batches it computes (after ``delay`` seconds)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.inner = OnnxRuntimeBackend()
        self.calls = 0
        self.delay = delay

    async def load(self, model: ModelSpec) -> None:
        await self.inner.load(model)

    async def unload(self, key: ModelKey) -> None:
        await self.inner.unload(key)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return await self.inner.infer(key, inputs, outputs)

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def close(self) -> None:
        await self.inner.close()


def _request(x: np.ndarray, key: str) -> InferenceRequest:
    return InferenceRequest(
        model_name="tiny", model_version="1", inputs={"features": x}, idempotency_key=key,
        payload_digest=hashlib.sha256(x.tobytes()).digest(), request_id=key, device_id="dev",
    )  # fmt: skip


async def test_two_replicas_one_redis_compute_once(redis_url: str, tmp_path: Path) -> None:
    spec = spec_from_onnx(tail_model(tmp_path / "tiny.onnx"), name="tiny", version="1")
    prefix = f"test:{uuid.uuid4().hex}:"
    backends = [CountingBackend(), CountingBackend()]
    db = SqliteMetadataBackend(tmp_path / "meta.sqlite3")
    writer = MetadataWriter(db, flush_interval_s=0.01)
    await writer.start()
    planes = [
        DataPlane(
            ModelRepository([spec]),
            b,
            DynamicBatching(),
            idempotency=RedisIdempotencyStore(aioredis.Redis.from_url(redis_url), prefix=prefix),
            metadata_sink=writer,
        )
        for b in backends
    ]
    for p in planes:
        await p.start()
    try:
        x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float32)
        first = await planes[0].infer(_request(x, "key-1"))
        planes[0].record(_request(x, "key-1"), "OK", first)
        second = await planes[1].infer(_request(x, "key-1"))  # the other replica
        assert second.cached and not first.cached
        np.testing.assert_array_equal(first.outputs["logits"], second.outputs["logits"])
        assert [b.calls for b in backends] == [1, 0]
        with pytest.raises(FailedPrecondition):
            await planes[1].infer(_request(x + 1, "key-1"))
        third = await planes[1].infer(_request(x, "key-2"))  # new key computes
        assert not third.cached
        assert [b.calls for b in backends] == [1, 1]
    finally:
        for p in planes:
            await p.close()
            assert isinstance(p.idempotency, RedisIdempotencyStore)
            await p.idempotency.close()
    await writer.stop()
    assert await db.count("requests") == 1
    assert await db.query("SELECT route, api, status, idempotency_key FROM requests") == [
        ("cloud", "infer", "OK", "key-1")
    ]
    await db.close()


async def test_concurrent_duplicates_on_two_replicas_compute_once(
    redis_url: str, tmp_path: Path
) -> None:
    """Both replicas receive every key at the same moment: the atomic claim (SET NX) lets one
    compute and the other wait for its stored result."""
    spec = spec_from_onnx(tail_model(tmp_path / "tiny.onnx"), name="tiny", version="1")
    prefix = f"test:{uuid.uuid4().hex}:"
    backends = [CountingBackend(delay=0.05), CountingBackend(delay=0.05)]
    planes = [
        DataPlane(
            ModelRepository([spec]),
            b,
            DynamicBatching(BatcherConfig(max_batch_size=1)),
            idempotency=RedisIdempotencyStore(
                aioredis.Redis.from_url(redis_url), prefix=prefix, poll_interval_s=0.005
            ),
        )
        for b in backends
    ]
    for p in planes:
        await p.start()
    try:
        rng = np.random.default_rng(1)
        xs = [rng.standard_normal((1, 4, 3, 3)).astype(np.float32) for _ in range(5)]
        results = await asyncio.gather(
            *(
                p.infer(_request(x, f"c-{i}"))
                for i, x in enumerate(xs)
                for p in planes
                for _ in (0, 1)
            )
        )
        assert sum(b.calls for b in backends) == len(xs)
        for i in range(len(xs)):
            group = results[4 * i : 4 * i + 4]
            assert sum(not r.cached for r in group) == 1
            for r in group:
                np.testing.assert_array_equal(r.outputs["logits"], group[0].outputs["logits"])
    finally:
        for p in planes:
            await p.close()
            assert isinstance(p.idempotency, RedisIdempotencyStore)
            await p.idempotency.close()
