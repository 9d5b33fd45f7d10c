"""Agent process for the bundle-following test: EdgeSettings from the JSON file given, requests
sent continuously (``--concurrency`` at a time, idempotency keys ``req-<i>``) until stdin closes.
Prints ``ANS <key> <route> <bundle version> [why not the cloud's]`` per answer, ``FAIL <key> <error>`` per request that
raised, ``METRICS <json>`` (``metrics()["bundle"]``) every 0.1 s and ``DONE <json>`` at the end."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from pathlib import Path

from edge_agent import EdgeAgent, EdgeSettings
from tests.support.edge_bundle import images


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--settings", type=Path, required=True)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args(argv)
    settings = EdgeSettings(**json.loads(args.settings.read_text()))
    imgs = images(256, seed=3)
    ids = itertools.count()
    stop = asyncio.Event()

    async def worker(agent: EdgeAgent) -> None:
        while not stop.is_set():
            i = next(ids)
            key = f"req-{i}"
            try:
                r = await agent.infer(imgs[i % len(imgs)], idempotency_key=key)
            except Exception as exc:
                print(f"FAIL {key} {type(exc).__name__}: {exc}", flush=True)
            else:
                why = (r.error or "").replace("\n", " ")
                print(f"ANS {key} {r.route.value} {r.bundle_version} {why}", flush=True)
            await asyncio.sleep(0.01)

    async def report(agent: EdgeAgent) -> None:
        while True:
            print("METRICS " + json.dumps(agent.metrics()["bundle"]), flush=True)
            await asyncio.sleep(0.1)

    async with EdgeAgent(settings) as agent:
        await agent.wait_connected(30)
        print("READY", flush=True)
        tasks = [asyncio.create_task(worker(agent)) for _ in range(args.concurrency)]
        reporter = asyncio.create_task(report(agent))
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin
        stop.set()
        await asyncio.gather(*tasks)
        reporter.cancel()
        print("DONE " + json.dumps(agent.metrics()["bundle"]), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
