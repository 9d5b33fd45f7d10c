"""Closed-loop REST load generator (run in its own process).

    python -m benchmarks.rest.loadgen_rest '{"url": "127.0.0.1:8000", "model": ..., "mode":
        "v2-json"|"v2-binary"|"v1-json", "concurrency": 32, "seconds": 3, "warmup": 0.5}'

v2-json / v2-binary: the unchanged tritonclient.http.aio with JSON tensors, or the binary-data
extension, both ways. v1-json: POST /v1/infer (inference.ModelInferRequest in proto3 JSON,
raw input contents base64) with aiohttp. Batch-1 requests of the model's input shape; prints
one JSON line with count, seconds, throughput and latency percentiles (ms).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import tritonclient.http.aio as tha


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
    url, model, mode = cfg["url"], cfg["model"], cfg["mode"]
    conc, seconds, warmup = cfg["concurrency"], cfg["seconds"], cfg.get("warmup", 0.5)
    client = tha.InferenceServerClient(url, conn_limit=conc)
    meta = await client.get_model_metadata(model)
    inp, out = meta["inputs"][0], meta["outputs"][0]
    shape = [1, *[int(d) for d in inp["shape"][1:]]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc))
    call: Callable[[], Awaitable[Any]]
    if mode.startswith("v2"):
        binary = mode == "v2-binary"

        async def call() -> Any:
            i = tha.InferInput(inp["name"], shape, "FP32")
            i.set_data_from_numpy(x, binary_data=binary)
            o = tha.InferRequestedOutput(out["name"], binary_data=binary)
            r = await client.infer(model, [i], outputs=[o])
            return r.as_numpy(out["name"])

    else:
        body = json.dumps({
            "modelName": model,
            "inputs": [{"name": inp["name"], "datatype": "FP32", "shape": [str(d) for d in shape]}],
            "rawInputContents": [base64.b64encode(x.tobytes()).decode()],
        }).encode()  # fmt: skip
        target = f"http://{url}/v1/infer"

        async def call() -> Any:
            async with session.post(
                target, data=body, headers={"content-type": "application/json"}
            ) as resp:
                doc = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(doc)
                return base64.b64decode(doc["rawOutputContents"][0])

    lat: list[float] = []
    start = time.perf_counter()
    t_measure, t_end = start + warmup, start + warmup + seconds

    async def worker() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            await call()
            if t0 >= t_measure:
                lat.append(time.perf_counter() - t0)

    await asyncio.gather(*[worker() for _ in range(conc)])
    await client.close()
    await session.close()
    return {**_stats(lat, seconds), "mode": mode, "concurrency": conc}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
