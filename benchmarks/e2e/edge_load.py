"""The device side of the end-to-end benchmark: drives one system with open-loop Poisson
arrivals (or a closed loop, to measure capacity) over Fashion-MNIST test images and writes
per-request outcomes as JSON.

Systems:
* ``hybrid``       — our edge agent: early exits, policy, codecs, one mTLS session stream;
* ``cloud``        — cloud-only through our gateway: the preprocessed input (raw float32 codec
                     frame) on the same session stream, full model in the cloud;
* ``triton``       — cloud-only through a real Triton with unchanged tritonclient (gRPC);
* ``edge``         — edge-only: the whole backbone on the device (onnxruntime, final exit).

Latency is measured from each request's scheduled arrival, so queueing on the device counts.
``triton`` imports tritonclient, which must never share a process with our generated
``inference`` package: this module imports neither at top level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.e2e._shared import BUNDLE, CloudOnly, load_test_images
from benchmarks.e2e.report import Outcome

log = logging.getLogger(__name__)

Infer = Callable[[int], Awaitable[Outcome]]


async def make_hybrid(
    args: argparse.Namespace, images: np.ndarray, labels: np.ndarray
) -> tuple[Infer, Callable[[], Awaitable[None]]]:
    from edge_agent import EdgeAgent, EdgeSettings, Route

    settings = EdgeSettings(
        bundle=BUNDLE, gateway=args.target, device_id=args.device_id,
        tls={"dir": args.tls_dir, "server_name": "localhost"}, routing={"sla_ms": args.sla_ms},
        cache={"entries": 0}, runtime={"intra_op_threads": 1},
    )  # fmt: skip
    agent = EdgeAgent(settings)
    await agent.__aenter__()
    await agent.wait_connected(10)

    async def infer(i: int) -> Outcome:
        t0 = time.perf_counter()
        r = await agent.infer(images[i], deadline_ms=args.sla_ms)
        route = r.route.value if isinstance(r.route, Route) else str(r.route)
        return Outcome(
            index=i, label=int(labels[i]), predicted=int(r.top_class), route=route,
            latency_s=time.perf_counter() - t0, bytes_up=int(r.bytes_sent),
            cloud_compute_s=r.timing.cloud_compute_ms / 1000, exit_index=r.exit_index,
            error=r.error or "",
        )  # fmt: skip

    return infer, lambda: agent.__aexit__(None, None, None)


async def make_cloud(
    args: argparse.Namespace, images: np.ndarray, labels: np.ndarray
) -> tuple[Infer, Callable[[], Awaitable[None]]]:
    cloud = await CloudOnly(args.target, args.tls_dir, args.device_id).__aenter__()

    async def infer(i: int) -> Outcome:
        return await cloud.infer(i, images[i], int(labels[i]))

    return infer, lambda: cloud.__aexit__(None, None, None)


async def make_triton(
    args: argparse.Namespace, images: np.ndarray, labels: np.ndarray
) -> tuple[Infer, Callable[[], Awaitable[None]]]:
    import tritonclient.grpc.aio as tc_aio
    from tritonclient.grpc import InferInput

    from common.bundle import load_bundle

    bundle = load_bundle(BUNDLE)
    client = tc_aio.InferenceServerClient(args.target)
    input_name = bundle.manifest.input.name

    async def infer(i: int) -> Outcome:
        t0 = time.perf_counter()
        x = bundle.preprocess(images[i : i + 1])
        inp = InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        try:
            result = await client.infer(args.triton_model, [inp])
        except Exception as exc:
            return Outcome(i, int(labels[i]), -1, "error", time.perf_counter() - t0, error=str(exc))
        logits = result.as_numpy(result.get_response().outputs[0].name)
        return Outcome(
            index=i, label=int(labels[i]), predicted=int(np.argmax(logits[0])), route="cloud",
            latency_s=time.perf_counter() - t0, bytes_up=x.nbytes,
        )  # fmt: skip

    return infer, client.close


async def make_edge(
    args: argparse.Namespace, images: np.ndarray, labels: np.ndarray
) -> tuple[Infer, Callable[[], Awaitable[None]]]:
    import onnxruntime as ort

    from common.bundle import load_bundle

    bundle = load_bundle(BUNDLE)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(bundle.segment_path("full")), opts, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    lock = asyncio.Lock()  # one device core: requests queue for it

    async def infer(i: int) -> Outcome:
        t0 = time.perf_counter()
        async with lock:
            x = bundle.preprocess(images[i : i + 1])
            logits = await asyncio.to_thread(session.run, None, {input_name: x})
        return Outcome(
            i, int(labels[i]), int(np.argmax(logits[0][0])), "edge", time.perf_counter() - t0
        )

    async def close() -> None:
        return None

    return infer, close


MAKERS = {"hybrid": make_hybrid, "cloud": make_cloud, "triton": make_triton, "edge": make_edge}


async def open_loop(infer: Infer, n: int, rate: float, seed: int) -> tuple[list[Outcome], float]:
    """Poisson arrivals at ``rate``/s; latency counts from the scheduled arrival."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    start = time.perf_counter()
    tasks = []

    async def one(i: int, at: float) -> Outcome:
        out = await infer(i)
        # Re-base latency on the scheduled arrival (includes any lateness of this loop).
        out.latency_s = time.perf_counter() - (start + at)
        return out

    for i, at in enumerate(arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, float(at))))
    outcomes = await asyncio.gather(*tasks)
    return list(outcomes), time.perf_counter() - start


async def closed_loop(infer: Infer, n: int, concurrency: int) -> tuple[list[Outcome], float]:
    """``concurrency`` workers back to back: measures capacity."""
    it = iter(range(n))
    outcomes: list[Outcome] = []

    async def worker() -> None:
        for i in it:
            outcomes.append(await infer(i))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes, time.perf_counter() - start


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    images, labels, _ = load_test_images(args.n, args.offset)
    infer, close = await MAKERS[args.system](args, images, labels)
    try:
        for w in range(min(args.warmup, args.n)):  # connections, sessions, caches of onnxruntime
            await infer(w)
        if args.rate > 0:
            outcomes, wall = await open_loop(infer, args.n, args.rate, args.seed)
        else:
            outcomes, wall = await closed_loop(infer, args.n, args.concurrency)
    finally:
        await close()
    return {
        "system": args.system, "rate": args.rate, "n": args.n, "wall_s": wall,
        "throughput": len(outcomes) / wall, "outcomes": [asdict(o) for o in outcomes],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(MAKERS), required=True)
    parser.add_argument("--target", default="")
    parser.add_argument("--tls-dir", type=Path)
    parser.add_argument("--device-id", default="bench-device")
    parser.add_argument("--triton-model", default="")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="Poisson arrivals/s; 0 = closed loop"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sla-ms", type=float, default=500.0)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(result))
    print(json.dumps({"system": args.system, "throughput": result["throughput"]}), file=sys.stderr)


if __name__ == "__main__":
    main()
