"""Issue 13, attack 3: one device cannot starve the others' sessions.

Before: 70 sessions of one device, each declaring two 4 MiB requests and sending nothing,
reserved the whole 512 MiB global buffer and every other device was refused; 1,000 idle sessions
of one device were all welcomed. Now a device's sessions share its quotas
(``limits.max_sessions_per_device``, ``limits.max_buffered_bytes_per_device``) and its fair share
of the global buffer, so another device's large request still goes through.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from tests.adversarial._attack import under_attack
from tests.adversarial._client import Opened, channels, next_answer, open_many, open_session
from tests.adversarial._frames import chunk, header
from tests.adversarial._served import Probe, ServedGateway

CUT_SHAPE = (64, 32, 14, 14)
"""A full batch of cut1 feature maps (1.5 MiB raw)."""
OTHER_SHAPE = (8, 32, 14, 14)
"""The other device's request: 8 cut1 feature maps (200 KB)."""
HOLD_S = 3.0
"""How long the hog keeps its sessions while the legitimate device is measured."""
DECLARED = 4 << 20
"""What each hog request declares: the default ``session.max_request_bytes`` (4 MiB)."""
MAX_SESSIONS = 8  # limits.max_sessions_per_device default


async def test_one_device_with_70_sessions_cannot_take_the_buffer_of_others(
    served: ServedGateway, legit: Probe
) -> None:
    declare = [header(f"r{i}", CUT_SHAPE, total=DECLARED, cut="cut1") for i in range(2)]
    with under_attack("70 sessions x 2 x 4 MiB declared", served, legit):
        async with channels(served, "attacker", 7) as chans:
            hog = await open_many(chans, 70, *declare)
            welcomed = [o for o in hog if o.welcomed]
            refused = [o for o in hog if not o.welcomed]
            # Another device still gets a large request through, chunk by chunk.
            async with served.aio_channel("other-1") as ch:
                other = await open_session(ch, header("big", OTHER_SHAPE, cut="cut1"))
                assert other.welcomed
                data = np.random.default_rng(1).standard_normal(OTHER_SHAPE, np.float32).tobytes()
                step = 1 << 20
                for off in range(0, len(data), step):
                    last = off + step >= len(data)
                    await other.call.write(chunk("big", off, data[off : off + step], last))
                answer = await next_answer(other.call)
                assert answer.WhichOneof("frame") == "infer_result", answer  # type: ignore[attr-defined]
                await other.call.done_writing()
            await asyncio.sleep(HOLD_S)
    assert len(welcomed) == MAX_SESSIONS
    assert {o.code for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all("limits.max_sessions_per_device" in o.details for o in refused)
    assert max(o.seconds for o in refused) < 1.0, "refusals must be answered within 1 s"


async def test_a_thousand_idle_sessions_of_one_device_are_refused_past_its_quota(
    served: ServedGateway, legit: Probe
) -> None:
    with under_attack("1000 idle sessions", served, legit):
        async with channels(served, "attacker-2", 10) as chans:
            opened: list[Opened] = []
            for _ in range(10):  # in waves of 100, as fast as the gateway answers
                opened += await open_many(chans, 100)
            await asyncio.sleep(HOLD_S)
    welcomed = [o for o in opened if o.welcomed]
    refused = [o for o in opened if not o.welcomed]
    assert len(welcomed) == MAX_SESSIONS
    assert {o.code for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert max(o.seconds for o in refused) < 1.0, "refusals must be answered within 1 s"
