"""Issue 13: a device's inference calls draw on its quotas, not only its session stream.

Before: the per-device quotas (``limits.*``) applied only to session requests; one device sent
about 2,000 ModelInfer/s and none was refused RESOURCE_EXHAUSTED, and it could keep any number of
unary requests in flight. Now every ModelInfer of a device takes a token of its request rate
(``limits.requests_per_s``: 500/s, burst 500) and counts in flight and in bytes with its sessions
(``cloud.core.DeviceQuotas.call``): past its rate a flood is refused at once, before its tensors
are decoded or batched, while another device's calls and the legitimate device's session are
answered, and what the calls held is returned. The flood asks for an output the model lacks, as
the measured one did: each admitted call is answered INVALID_ARGUMENT without computing, so the
flood outruns the rate (valid ones are paced by compute at about the rate itself here).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import numpy as np

from tests.adversarial._attack import under_attack
from tests.adversarial._infer import infer_request, many, reference_logits, stub
from tests.adversarial._served import Probe, ServedGateway

RATE, BURST = 500.0, 500
"""``limits.requests_per_s`` and ``limits.burst`` (the defaults ``serve`` runs with)."""
FLOOD = 3000
"""ModelInfers the attacker sends as fast as it can (it reached about 2,000/s before)."""
WRONG = "no output 'does_not_exist'"
OTHER_INTERVAL_S = 0.05


def _buffered_bytes(gw: ServedGateway) -> float:
    """``aiml021_gateway_buffered_bytes``: bytes the gateway holds for unfinished requests."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("aiml021_gateway_buffered_bytes "):
                return float(line.split()[-1])
    raise AssertionError("no aiml021_gateway_buffered_bytes on /metrics")


async def test_a_device_over_its_request_rate_is_refused_at_once_while_others_are_served(
    served: ServedGateway, legit: Probe
) -> None:
    request = infer_request()
    request.outputs.add(name="does_not_exist")
    async with served.aio_channel("attacker") as ch, served.aio_channel("other-1") as other_ch:
        inference, other = stub(ch), stub(other_ch)
        expected = await reference_logits(other_ch)
        other_answers: list[np.ndarray] = []
        flooding = True

        async def other_device() -> None:  # a well-behaved device calling meanwhile
            while flooding:
                out = await other.ModelInfer(infer_request(), timeout=5)
                other_answers.append(np.frombuffer(out.raw_output_contents[0], np.float32))
                await asyncio.sleep(OTHER_INTERVAL_S)

        with under_attack(f"{FLOOD} ModelInfers of one device at once", served, legit):
            calm = asyncio.create_task(other_device())
            t0 = time.monotonic()
            answers = await many(
                [lambda: inference.ModelInfer(request, timeout=5)] * FLOOD, concurrency=32
            )
            flood_s = time.monotonic() - t0
            flooding = False
            await calm
    admitted = [a for a in answers if a.code is grpc.StatusCode.INVALID_ARGUMENT]
    refused = [a for a in answers if a.code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    print(f"flood: {len(admitted)} admitted, {len(refused)} refused in {flood_s:.2f} s")
    assert len(admitted) + len(refused) == FLOOD, {(a.code, a.details[:80]) for a in answers}
    assert all(WRONG in a.details for a in admitted)
    # the burst and what refilled while the flood lasted were admitted, the rest refused
    assert BURST <= len(admitted) <= BURST + RATE * flood_s + 1, (len(admitted), flood_s)
    assert refused, f"{FLOOD} calls in {flood_s:.2f} s stayed under {RATE:g}/s"
    assert all(
        "device 'attacker' is over its request rate of 500/s (limits.requests_per_s)" in a.details
        for a in refused
    )
    assert max(a.seconds for a in refused) < 1.0, "refusals must be answered within 1 s"
    # the other device was answered throughout, correctly
    assert len(other_answers) >= flood_s / (OTHER_INTERVAL_S + 0.5)
    for got in other_answers:
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # what the calls held is returned (the probe's session holds bytes for a moment at times)
    assert any(_nothing_buffered(served) for _ in range(50)), "the calls' bytes stayed held"


def _nothing_buffered(gw: ServedGateway) -> bool:
    if _buffered_bytes(gw) == 0:
        return True
    time.sleep(0.05)
    return False
