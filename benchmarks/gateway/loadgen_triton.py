"""Closed-loop load generator with unchanged tritonclient.grpc.aio (run in its own process).

    python -m benchmarks.gateway.loadgen_triton '{"url":..., "model":..., "version":"",
        "mode":"unary"|"stream", "concurrency":32, "seconds":3, "warmup":0.5}'

Batch-1 requests of shape [1,1,28,28] FP32; prints one JSON line with count, seconds,
throughput and latency percentiles (ms).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tca


def _stats(lat: list[float], seconds: float) -> dict[str, Any]:
    a = np.asarray(lat) * 1e3
    return {
        "count": len(lat),
        "seconds": seconds,
        "throughput": len(lat) / seconds,
        "p50_ms": float(np.percentile(a, 50)) if len(a) else None,
        "p99_ms": float(np.percentile(a, 99)) if len(a) else None,
    }


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    client = tca.InferenceServerClient(cfg["url"])
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    model, version = cfg["model"], cfg.get("version", "")
    conc, seconds, warmup = cfg["concurrency"], cfg["seconds"], cfg.get("warmup", 0.5)
    lat: list[float] = []
    start = time.perf_counter()
    t_measure = start + warmup
    t_end = t_measure + seconds

    def make() -> list[tca.InferInput]:
        i = tca.InferInput("input", [1, 1, 28, 28], "FP32")
        i.set_data_from_numpy(x)
        return [i]

    if cfg["mode"] == "unary":

        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                await client.infer(model, make(), model_version=version)
                t1 = time.perf_counter()
                if t0 >= t_measure:
                    lat.append(t1 - t0)

        await asyncio.gather(*[worker() for _ in range(conc)])
    else:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        sent: dict[str, float] = {}
        seq = 0

        def enqueue() -> None:
            nonlocal seq
            seq += 1
            rid = str(seq)
            sent[rid] = time.perf_counter()
            queue.put_nowait(
                {"model_name": model, "model_version": version, "inputs": make(), "request_id": rid}
            )

        async def requests():  # type: ignore[no-untyped-def]
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        for _ in range(conc):
            enqueue()
        outstanding = conc
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                raise RuntimeError(str(error))
            now = time.perf_counter()
            t0 = sent.pop(result.get_response().id)
            outstanding -= 1
            if t0 >= t_measure and now <= t_end:
                lat.append(now - t0)
            if now < t_end:
                enqueue()
                outstanding += 1
            elif outstanding == 0:
                queue.put_nowait(None)
                break
    await client.close()
    return _stats(lat, seconds)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
