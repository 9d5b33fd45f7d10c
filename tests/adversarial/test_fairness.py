"""Issue 13, compute fairness: one device flooding valid requests cannot take the compute of
others.

The flooder keeps 64 requests of 8 samples each open, with short deadlines at the highest
priority, for as long as the attack lasts, so the model's queue never empties: by deadline and
priority alone every one of them comes before the legitimate device's requests (no deadline,
normal priority). Before, the batcher served the queue earliest deadline first over all devices
and the legitimate device starved: 2 answers in 6.3 s, p99 6.3 s. Now each device is one flow of
the batcher, batches take the flows' requests in turn (deadline and priority order only within
a device), batches are cut short while devices share the model, and a device holds at most its
share of the queue, so the legitimate device waits for about one short batch.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from tests.adversarial._attack import MAX_ATTACK_S, under_attack
from tests.adversarial._infer import infer_request, stub, timed
from tests.adversarial._served import Probe, ServedGateway

ROWS = 8
"""Samples per flood request (an eighth of a full batch of the reference model)."""
IN_FLIGHT = 64
"""Flood requests the attacker keeps open: far more than the gateway computes in their deadline."""
FLOOD_S = 6.0


async def _flood(gw: ServedGateway, device: str, until: float) -> dict[grpc.StatusCode, int]:
    """Keep :data:`IN_FLIGHT` urgent, high-priority requests of ``device`` open until ``until``;
    how they ended, by status."""
    req = infer_request(
        shape=(ROWS, 1, 28, 28), contents=np.zeros((ROWS, 1, 28, 28), np.float32).tobytes()
    )
    req.parameters["priority"].uint64_param = 1  # Triton: 1 is the highest
    ended: dict[grpc.StatusCode, int] = {}
    channels = [gw.aio_channel(device) for _ in range(4)]
    try:

        async def worker(i: int) -> None:
            inference = stub(channels[i % len(channels)])
            while time.monotonic() < until:
                answer = await timed(inference.ModelInfer(req, timeout=0.5))
                ended[answer.code] = ended.get(answer.code, 0) + 1
                if answer.code is not grpc.StatusCode.OK:
                    await asyncio.sleep(0.005)  # refused at once: do not spin the event loop

        await asyncio.gather(*(worker(i) for i in range(IN_FLIGHT)))
    finally:
        for ch in channels:
            await ch.close()
    return ended


async def test_a_flooding_device_gets_its_share_of_compute_not_everyone_elses(
    served: ServedGateway, legit: Probe
) -> None:
    assert FLOOD_S < MAX_ATTACK_S
    with under_attack("one device floods urgent 8-sample requests", served, legit) as report:
        ended = await _flood(served, "attacker", time.monotonic() + FLOOD_S)
        report.rss_peak_mb = max(report.rss_peak_mb, served.rss_mb())
    print(f"flood: {ended}")
    # The flooder was still served: its share is capped, not taken away.
    assert ended.get(grpc.StatusCode.OK, 0) * ROWS > 2_000, ended
    assert set(ended) - {grpc.StatusCode.OK} <= {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, ended
