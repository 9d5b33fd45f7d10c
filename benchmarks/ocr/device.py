"""One device of the OCR fleet (a process): camera-like arrivals of rendered 1280×720 frames,
the OCR application (:mod:`benchmarks.ocr.app`) under the device class's CPU share, and its own
shaped link (``benchmarks.e2e.linkem`` proxies in this process) to the gateway and to the
cloud's whole-frame OCR. Writes one JSON document: every frame's latency, bytes, cloud and
device compute, routes and score.

Arrivals: a frame every ``--interval`` seconds on average (exponential gaps), and with
probability ``--burst`` a frame arrives with the next one right behind it (0.2 s), like a
technician re-taking a shot. Frames queue on the device (one compute thread).

``--link-schedule`` changes the link mid-run (a bandwidth drop): ``[[t_s, {"bandwidth_mbit": b,
"rtt_ms": r}], ...]`` from the first frame's clock; every connection's both directions follow.
The decider's link estimate is the link's current setting (what the OS reports for the radio),
not a measurement from the device's own traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.e2e.linkem import Impairment, LinkEmulator, _Direction
from benchmarks.ocr.app import Answer, FrameClient, FrameResult, OcrApp, Policy, score


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _answer(a: Answer) -> dict[str, Any]:
    box = [[round(float(v), 1) for v in p] for p in a.box]
    return {"text": a.text, "edge_text": a.edge_text, "route": a.route,
            "confidence": round(a.confidence, 4), "box": box}  # fmt: skip


class ScheduledLink(LinkEmulator):
    """A link emulator whose impairment can change while connections are open."""

    def __init__(self, target: tuple[str, int], impairment: Impairment) -> None:
        super().__init__(target, impairment)
        self.directions: list[_Direction] = []

    async def _pump(self, src: Any, dst: Any, d: _Direction, up: bool) -> None:
        self.directions.append(d)
        await super()._pump(src, dst, d, up)

    def set(self, impairment: Impairment) -> None:
        self.impairment = impairment
        for d in self.directions:
            d.impairment = impairment


def arrivals(n: int, interval: float, burst: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, out = rng.uniform(0, interval), list[float]()
    while len(out) < n:
        out.append(t)
        if len(out) < n and rng.random() < burst:
            t += 0.2
            out.append(t)
        t += rng.expovariate(1 / interval)
    return out[:n]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    link = json.loads(args.link)
    imp = Impairment(
        delay_s=link["rtt_ms"] / 2000,
        jitter_s=link.get("jitter_ms", 0) / 2000,
        loss=link.get("loss", 0.0),
        bandwidth_bps=link["bandwidth_mbit"] * 1e6,
        outage_period_s=link.get("outage_period_s", 0.0),
        outage_duration_s=link.get("outage_duration_s", 0.0),
        seed=args.seed,
    )
    frames_doc = json.loads(Path(args.frames_json).read_text())
    root = Path(args.frames_json).parent
    chosen = [frames_doc["frames"][i % len(frames_doc["frames"])] for i in args.frame_index]
    policy = Policy(**json.loads(args.policy))
    emus: list[ScheduledLink] = []
    client: Any = None
    frame_ocr: Any = None  # FrameClient, GatewayFrameOcr or TritonFrameOcr
    t_start = time.monotonic()
    via_gateway = args.cloud_target == "gateway"  # whole frames to the gateway's pipeline model
    if args.system != "edge" and not via_gateway:
        emu = ScheduledLink(_hostport(args.frame_service), imp)
        emus.append(emu)
        port = await emu.start()
        if args.cloud_target == "triton":  # the pipeline as a Triton python-backend model
            from benchmarks.ocr.triton_frames import TritonFrameOcr

            frame_ocr = TritonFrameOcr("127.0.0.1", port)
        else:
            frame_ocr = FrameClient("127.0.0.1", port)
    if args.system == "hybrid" or (args.system == "cloud" and via_gateway):
        from common.settings import nest
        from edge_agent import EdgeSettings, SessionClient

        emu = ScheduledLink(_hostport(args.gateway), imp)
        emus.append(emu)
        target = f"127.0.0.1:{await emu.start()}"
        settings = EdgeSettings(
            **nest({"gateway": target, "tls.insecure": True, "device_id": args.device_id})
        )
        client = SessionClient(target, settings)
        client.start()
        await client.wait_connected(30)
    if args.system != "edge" and via_gateway:
        from benchmarks.ocr.gateway_frames import GatewayFrameOcr

        frame_ocr = GatewayFrameOcr(client)
    app = OcrApp(
        args.system,
        args.share,
        policy,
        client=client,
        frame_ocr=frame_ocr,
        link_mbit=link["bandwidth_mbit"],
    )
    period, down = imp.outage_period_s, imp.outage_duration_s
    t_link = emus[0]._start if emus else time.monotonic()  # the links' outage clock

    def online() -> bool:
        if period <= 0 or down <= 0:
            return True
        return (time.monotonic() - t_link) % period < period - down

    app.online = online
    now_link = {"rtt_ms": float(link["rtt_ms"]), "bandwidth_mbit": float(link["bandwidth_mbit"])}
    app.link = lambda: (now_link["rtt_ms"], now_link["bandwidth_mbit"])
    schedule = json.loads(args.link_schedule)

    async def follow_schedule() -> None:
        for at, change in schedule:
            await asyncio.sleep(max(0.0, ready + float(at) - time.perf_counter()))
            now_link.update({k: float(v) for k, v in change.items()})
            new = replace(
                imp,
                delay_s=now_link["rtt_ms"] / 2000,
                bandwidth_bps=now_link["bandwidth_mbit"] * 1e6,
            )
            for e in emus:
                e.set(new)

    jpegs = [(root / f["file"]).read_bytes() for f in chosen]
    ready = time.perf_counter()
    times = arrivals(len(chosen), args.interval, args.burst, args.seed)
    results: list[FrameResult] = []

    async def one(k: int) -> None:
        await asyncio.sleep(max(0.0, ready + times[k] - time.perf_counter()))
        results.append(await app.read(chosen[k]["id"], jpegs[k], ready + times[k]))

    c0 = time.process_time()
    follower = asyncio.ensure_future(follow_schedule())
    await asyncio.gather(*(one(k) for k in range(len(chosen))))
    follower.cancel()
    replayed = await app.drain()
    cpu_total = time.process_time() - c0
    truth = {f["id"]: f["lines"] for f in chosen}
    frames = []
    for r in sorted(results, key=lambda r: r.arrival):
        frames.append(
            {
                "id": r.frame_id,
                "arrival_s": r.arrival - ready,
                "latency_s": r.latency_s,
                "bytes_up": r.bytes_up,
                "cloud_ms": r.cloud_ms,
                "device_cpu_s": r.device_cpu_s,
                "device_busy_s": r.device_busy_s,
                "errors": r.errors,
                "decision": r.decision,
                "requests": r.requests,
                "link_mbit": r.link_mbit,
                **score(r.lines, truth[r.frame_id]),
                "answers": [_answer(a) for a in r.lines],
            }
        )
    if client is not None:
        await client.close()
    for e in emus:
        await e.close()
    return {
        "device_id": args.device_id,
        "system": args.system,
        "share": args.share,
        "link": link,
        "policy": json.loads(args.policy),
        "replayed": replayed,
        "process_cpu_s": cpu_total,
        "wire_bytes_up": sum(e.bytes_up for e in emus),
        "wire_bytes_down": sum(e.bytes_down for e in emus),
        "elapsed_s": time.monotonic() - t_start,
        "frames": frames,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=("edge", "cloud", "hybrid"), required=True)
    ap.add_argument("--share", type=float, default=1.0, help="CPU share of one core")
    ap.add_argument("--link", required=True, help="JSON: rtt_ms, bandwidth_mbit, ...")
    ap.add_argument("--gateway", default="")
    ap.add_argument("--frame-service", default="")
    ap.add_argument("--cloud-target", choices=("gateway", "service", "triton"), default="service",
                    help="whole frames to the gateway's pipeline model, to cloud_ocr.py or to "
                         "Triton's (at --frame-service)")  # fmt: skip
    ap.add_argument("--frames-json", required=True)
    ap.add_argument("--frame-index", type=int, nargs="+", required=True)
    ap.add_argument("--interval", type=float, default=4.0)
    ap.add_argument("--burst", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", default="{}")
    ap.add_argument("--link-schedule", default="[]", help="JSON [[t_s, {bandwidth_mbit, rtt_ms}]]")
    ap.add_argument("--device-id", default="ocr-dev")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.write_text(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
