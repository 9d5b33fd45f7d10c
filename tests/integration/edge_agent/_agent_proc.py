"""Agent process for the durability test: infers images[start:count] with idempotency keys
``req-<i>`` (skipping ids listed in --skip), printing ``ACK <i> <route>`` after each answer (for
deferred requests: after the encrypted entry is committed), then, when a gateway is configured,
waits until the replay queue is empty and prints ``DONE``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from edge_agent import EdgeAgent, EdgeSettings
from tests.support.edge_bundle import images


async def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--gateway", required=True)
    p.add_argument("--replay", type=Path, required=True)
    p.add_argument("--key-file", type=Path, required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--skip", type=Path)
    p.add_argument("--wait-online", action="store_true")
    args = p.parse_args(argv)
    skip = set()
    if args.skip and args.skip.exists():
        skip = {int(x) for x in args.skip.read_text().split()}
    settings = EdgeSettings(
        bundle=args.bundle,
        gateway=args.gateway,
        tls={"insecure": True},
        replay={"path": args.replay, "key_file": args.key_file, "concurrency": 16},
        session={"backoff_initial_s": 0.05, "backoff_max_s": 0.3},
        routing={"sla_ms": 2000},
        cache={"entries": 0},
    )
    imgs = images(args.count, seed=7)
    async with EdgeAgent(settings) as agent:
        if args.wait_online:
            await agent.wait_connected(10)
        for i in range(args.count):
            if i in skip:
                continue
            r = await agent.infer(imgs[i], idempotency_key=f"req-{i}")
            print(f"ACK {i} {r.route.value}", flush=True)
        assert agent.replay is not None
        while len(agent.replay) > 0 or not agent.connected:  # noqa: ASYNC110 - polls a SQLite count
            await asyncio.sleep(0.05)
        print(f"DONE {agent.metrics()['replay']}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
