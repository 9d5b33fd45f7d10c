"""What encryption at rest and complete erasure cost the gateway.

    .venv/bin/python -m benchmarks.privacy.at_rest_cost [--redis redis://127.0.0.1:6379/12]

1. Metadata rows: time to build a batch's rows (``cloud.stores._records.statements``) for
   10,000 request records in the clear and sealed (``RowSealer``: two AES-256-GCM seals per
   record, ``requests`` and ``results``); the writer does this off the request path.
2. Result cache over a real Redis, values sealed (``SealedRedis``): p50 of a hit and of a put
   through ``OrgScopedCache`` with results private to the device (no owner sets needed) and in a
   cache the org shares (owner sets kept for ``aiml021 privacy forget``), alternated A B A B.

Writes benchmarks/results/privacy_at_rest_cost.json and prints it. On a shared machine the
numbers are upper bounds; the load average is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from cloud.core import (
    CacheEntry,
    InferenceResult,
    OrgScopedCache,
    Principal,
    RequestRecord,
    Role,
    acting_as,
)
from cloud.stores import RedisResultCache, SealedRedis
from cloud.stores._records import PriceTable, Record, statements
from cloud.stores._sealed_rows import RowSealer
from common.privacy import KeyRing

OUT = Path(__file__).resolve().parents[1] / "results" / "privacy_at_rest_cost.json"


def rows_cost(n: int = 10_000, repeats: int = 5) -> dict[str, float]:
    """Microseconds per request record to build its rows, clear and sealed (median)."""
    records: list[Record] = [
        RequestRecord(
            request_id=f"req_{i:032x}", device_id="dev_" + "a" * 32, model_name="m",
            model_version="1", route="cloud", status="OK", top_class=3, confidence=0.9,
            latency_ms=2.0, idempotency_key=f"key-{i}",
        )
        for i in range(n)
    ]  # fmt: skip
    sealer = RowSealer(KeyRing.generate("k1"))
    out = {}
    for name, s in (("clear_us_per_record", None), ("sealed_us_per_record", sealer)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            statements(records, PriceTable(), s)
            times.append(time.perf_counter() - t)
        out[name] = round(statistics.median(times) / n * 1e6, 1)
    return out


async def _cache_round(url: str, shared: bool, n: int) -> dict[str, float]:
    import redis.asyncio as aioredis

    ring = KeyRing.generate("k1")
    inner = RedisResultCache(
        SealedRedis(aioredis.Redis.from_url(url), ring), prefix=f"bench{uuid.uuid4().hex[:8]}:"
    )
    cache = OrgScopedCache(inner, per_principal=not shared)
    device = Principal("cam-1", Role.DEVICE, "bench", device_id="cam-1")
    result = InferenceResult("m", "1", {"y": np.zeros((1, 10), np.float32)}, batch_size=1)
    content = hashlib.sha256(b"x").hexdigest()
    hits, puts = [], []
    with acting_as(device):
        await cache.put("m:1", content, CacheEntry.of(result), ttl_s=60)
        for _ in range(100):
            await cache.get("m:1", content)
        for _ in range(n):
            t = time.perf_counter()
            await cache.get("m:1", content)
            hits.append(time.perf_counter() - t)
        for i in range(n // 4):
            key = hashlib.sha256(str(i).encode()).hexdigest()
            t = time.perf_counter()
            await cache.put("m:1", key, CacheEntry.of(result), ttl_s=60)
            puts.append(time.perf_counter() - t)
    await cache.close()
    return {
        "hit_p50_us": round(statistics.median(hits) * 1e6),
        "put_p50_us": round(statistics.median(puts) * 1e6),
    }


async def cache_cost(url: str, rounds: int = 2, n: int = 2000) -> dict[str, list[dict[str, float]]]:
    """Hit and put p50 without and with owner sets, alternated."""
    out: dict[str, list[dict[str, float]]] = {"private_results": [], "shared_org_cache": []}
    for _ in range(rounds):
        out["private_results"].append(await _cache_round(url, False, n))
        out["shared_org_cache"].append(await _cache_round(url, True, n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    report["metadata_rows"] = rows_cost()
    report["result_cache"] = asyncio.run(cache_cost(args.redis))
    report["load_average_after"] = os.getloadavg()[0]
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
