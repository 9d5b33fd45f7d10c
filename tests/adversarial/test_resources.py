"""Issue 13, attacks 2, 5 and 6: what a request costs the gateway is bounded by what it may
declare, and returned when it fails.

Before: an 8 KB zstd frame decoded to 256 MiB on the event loop (40 of them: RSS 118 -> 641 MB,
legitimate latency 3.4-4.7 s); 3 rounds of 16 concurrent 15 MiB invalid ModelInfers took RSS from
141 MB to 2.39 GB and left 2.03 GB; 3,000 ModelInfers with unique 10 kB model names grew
/metrics from 12 KB to 60.6 MB. Now the frame is refused before decoding, rejected requests'
memory is returned, and unknown model names share one label (whether the request was answered
NOT_FOUND or refused for the device's request rate, ``limits.requests_per_s``).
"""

from __future__ import annotations

import asyncio
import functools

import grpc
import numpy as np
from aiml021.common.v1 import tensor_pb2

from common import codecs
from tests.adversarial._attack import under_attack
from tests.adversarial._client import next_answer, open_session
from tests.adversarial._frames import header
from tests.adversarial._infer import (
    BIG_MESSAGES,
    infer_request,
    many,
    metrics_bytes,
    stub,
    timed,
)
from tests.adversarial._served import Probe, ServedGateway

CUT1 = (1, 32, 14, 14)
BURST = 500
"""``limits.burst`` (default): ModelInfers a device may send at once."""


def _bomb() -> bytes:
    """An ~8 KB zstd frame of 256 MiB of zeros."""
    return codecs.encode(np.zeros((1, 32, 4096, 512), np.float32), "raw|zstd")


async def test_a_decompression_bomb_is_refused_before_decoding(
    served: ServedGateway, legit: Probe
) -> None:
    bomb = _bomb()
    assert len(bomb) < 16_384
    async with served.aio_channel("attacker") as ch:
        with under_attack("40 zstd bombs (256 MiB each) on cut1", served, legit) as report:
            answers = []
            for wave in range(4):
                frames = []
                for i in range(10):
                    h = header(f"b{wave}-{i}", CUT1, payload=bomb, total=len(bomb), cut="cut1")
                    h.infer_header.encoding.codec.stages[0].kind = tensor_pb2.CODEC_KIND_ZSTD
                    frames.append(h)
                opened = await open_session(ch, *frames)
                assert opened.welcomed, opened.details
                t0 = asyncio.get_running_loop().time()
                for _ in frames:
                    answers.append((await next_answer(opened.call), t0))
                report.rss_peak_mb = max(report.rss_peak_mb, served.rss_mb())
                await opened.call.done_writing()
    kinds = {a.WhichOneof("frame") for a, _ in answers}  # type: ignore[attr-defined]
    assert kinds == {"infer_error"}
    codes = {a.infer_error.status.code for a, _ in answers}  # type: ignore[attr-defined]
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT.value[0]}
    assert report.rss_peak_mb < report.rss_before_mb + 50


async def test_memory_of_rejected_large_requests_is_returned(
    served: ServedGateway, legit: Probe
) -> None:
    # 15 MiB is more than any served model can take (server.fit_message_limit_to_models: the
    # limit is 1.67 MB here), so gRPC refuses it unread; 1.5 MiB passes that limit and is
    # refused by the gateway's own check of the contents against the declared shape.
    too_big = infer_request(contents=bytes(15 << 20))
    wrong = infer_request(contents=bytes(3 << 19))
    with under_attack("3 x 16 concurrent 15 MiB + 1.5 MiB invalid ModelInfers", served, legit) as r:
        answers = []
        async with grpc.aio.secure_channel(
            served.address, served.credentials("attacker"), options=BIG_MESSAGES
        ) as ch:  # the attack ends when the attacker goes away
            inference = stub(ch)
            for round_ in range(3):
                if round_:
                    await r.pause(1.0)  # a baseline between the rounds, in the same run
                for req in (too_big, wrong):
                    calls = [functools.partial(inference.ModelInfer, req)] * 16
                    answers += await many(calls, concurrency=16)
                    r.rss_peak_mb = max(r.rss_peak_mb, served.rss_mb())
    refused = [a for a in answers if a.code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    invalid = [a for a in answers if a.code is grpc.StatusCode.INVALID_ARGUMENT]
    assert len(refused) == len(invalid) == 48, {(a.code, a.details[:60]) for a in answers}
    assert all("larger than max" in a.details for a in refused)
    assert all("contents have 1572864 bytes" in a.details for a in invalid)
    # In the flood, 16 requests of MiBs arrive together over one TLS connection and the last is
    # read after the others; the status of each such request alone comes within 1 s.
    async with grpc.aio.secure_channel(
        served.address, served.credentials("attacker"), options=BIG_MESSAGES
    ) as ch:
        alone = [await timed(stub(ch).ModelInfer(req)) for req in (too_big, wrong)]
    assert [a.code for a in alone] == [
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    ]
    assert max(a.seconds for a in alone) < 1.0


async def test_unique_model_names_do_not_grow_metrics(served: ServedGateway, legit: Probe) -> None:
    async with served.aio_channel("attacker") as ch:
        inference = stub(ch)
        await many([lambda: inference.ModelInfer(infer_request("warm-up-" + "n" * 100))], 1)
        size = metrics_bytes(served)
        names = [f"m{i:05d}-" + "n" * 10_000 for i in range(3000)]
        answers = []
        with under_attack("3,000 unique 10 kB model names", served, legit) as r:
            for round_ in range(3):
                if round_:
                    await r.pause(1.0)
                answers += await many(
                    [
                        lambda n=n: inference.ModelInfer(infer_request(n))  # type: ignore[misc]
                        for n in names[round_ * 1000 : (round_ + 1) * 1000]
                    ],
                    concurrency=8,
                )
    ends = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED)
    unknown, refused = ([a for a in answers if a.code is code] for code in ends)
    assert len(unknown) + len(refused) == len(answers), {
        (a.code, a.details[-150:]) for a in answers if a.code not in ends
    }
    # each round starts with a full bucket (after the baseline or a 1 s pause): at least its
    # burst reaches the model lookup; past the rate the rest is refused, naming the limit
    assert len(unknown) >= 3 * BURST, len(unknown)
    assert all("(limits.requests_per_s)" in a.details for a in refused)
    assert max(a.seconds for a in answers) < 1.0
    grown = metrics_bytes(served) - size
    assert grown < 2_000, f"/metrics grew by {grown} bytes"
