"""Open-loop load at a fixed rate with unchanged ``tritonclient.grpc.aio`` (run in its own process).

    python -m benchmarks.capacity.loadgen '{"url": ..., "model": ..., "version": "",
        "input": "input", "rate": 400, "seconds": 4, "warmup": 1, "clients": 16}'

Requests (batch 1, [1,1,28,28] FP32, KServe v2 ModelInfer) are sent on a fixed schedule whatever
the answers do (open loop: a slow server is not rewarded with fewer requests), spread over
``clients`` channels (separate connections, so SO_REUSEPORT workers and a balancer see many).
Latency is measured from each request's *scheduled* time, so client-side backlog counts against
the server too. A request unanswered ``timeout_s`` after the end counts as an error. Prints one
JSON line: target and achieved rate, ok, errors, p50/p95/p99 ms.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tca


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    clients = [
        tca.InferenceServerClient(cfg["url"], channel_args=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(int(cfg.get("clients", 16)))
    ]
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    inp = tca.InferInput(cfg.get("input", "input"), [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    model, version = cfg["model"], str(cfg.get("version", ""))
    rate, seconds, warmup = float(cfg["rate"]), float(cfg["seconds"]), float(cfg.get("warmup", 1))
    timeout_s = float(cfg.get("timeout_s", 5.0))
    lat: list[float] = []
    errors = 0
    measured = 0
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, scheduled: float, counted: bool) -> None:
        nonlocal errors
        try:
            await clients[i % len(clients)].infer(
                model, [inp], model_version=version, client_timeout=timeout_s + seconds
            )
        except Exception:
            if counted:
                errors += 1
            return
        if counted:
            lat.append(time.perf_counter() - scheduled)

    start = time.perf_counter()
    total = int(rate * (warmup + seconds))
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        counted = i >= rate * warmup
        measured += counted
        t = asyncio.create_task(one(i, scheduled, counted))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    sent_s = time.perf_counter() - start
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for t in pending:
            t.cancel()
        errors += sum(1 for _ in pending)
    for c in clients:
        await c.close()
    a = np.asarray(lat) * 1e3
    pct = {q: (float(np.percentile(a, q)) if len(a) else None) for q in (50, 95, 99)}
    # a request that never succeeded is slower than any SLO: it counts at the tail
    p95_all = None
    if measured:
        padded = np.concatenate([a, np.full(measured - len(a), np.inf)]) if measured > len(a) else a
        p95_all = float(np.percentile(padded, 95))
    return {
        "rate": rate,
        "measured": measured,
        "ok": len(lat),
        "errors": errors,
        "achieved_send_rate": total / sent_s,
        "goodput": len(lat) / seconds,
        "p50_ms": pct[50],
        "p95_ms": pct[95],
        "p99_ms": pct[99],
        "p95_ms_failures_as_inf": p95_all,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
