"""The OCR application on the SDK (issue 16): PP-OCRv4 reads a frame on the device, a policy
decides per line where it is answered.

Routes of a line:

* ``edge``: the device's own reading (calibrated confidence at or above the policy's threshold);
* ``region``: the line's region of the frame (``[1, 3, 48, W]``, coded with the policy's codec)
  goes over the device's session to the gateway's PP-OCRv6 recogniser (best-path head); the
  doubtful regions of one frame travel together, one ``[N, C, H, max W]`` request
  (``common.pipeline.stack_regions``), unless ``Policy.batch_regions`` is off;
* ``frame``: the whole frame (its JPEG bytes) goes to the cloud's PP-OCRv6 det+rec, whose lines
  replace the device's: with ``Policy.decider`` set, a ``policy.Policy`` decides that per frame
  *before* v4 runs (:mod:`benchmarks.ocr.decide`: the device's share, its queue, the link's
  bandwidth and RTT), and per line after it; without, a fixed rule (threshold, never the frame);
* ``deferred``: the link is down; the device answers now and queues the region, refined later
  (:meth:`OcrApp.replay`: route ``replayed``);
* ``edge_fallback``: a refinement failed (error, deadline): the device's line stays.

Device compute is throttled to the device class's CPU share (``share``): after each compute step
on the device the worker sleeps until ``cpu_time / share`` of wall time has passed, so a 0.25-core
"IoT" device takes four times the CPU time it used (the method is stated in BENCHMARKS.md;
cgroups would throttle the same way but the two shared cores here make wall time noisy).
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from common.pipeline import (
    Cascade,
    Line,
    apply_calibration,
    ctc_best_path,
    line_score,
    load_pipeline,
    region_input,
    stack_regions,
)
from common.pipeline._evaluate import match
from policy import INPUT_CUT, Action

CLOUD_REC = "ppocr_v6_rec_best"
CLOUD_REC_GRAY = "ppocr_v6_rec_gray"
"""The same recogniser taking one gray channel (``benchmarks.ocr.fleet.gray_input``)."""
EDGE_PIPELINE = "ppocr_v4_cascade"
ROUTES = ("edge", "region", "frame", "deferred", "replayed", "edge_fallback")


@dataclass(frozen=True)
class Policy:
    """A static per-line policy: the calibrated-confidence threshold, when a whole frame is
    worth sending instead of its regions, and the region codec."""

    name: str = "hybrid"
    threshold: float = 0.9
    frame_share: float = 1.01
    """Send the whole frame when at least this share of its lines is doubtful (> 1: never)."""
    frame_min_mbit: float = 5.0
    """... and only on links at least this fast."""
    codec: str = "q4|zstd"
    """Region codec: 4-bit levels and zstd kept v6's reading on 30 of 30 gray lines (3 frames)."""
    gray: bool = True
    """Send regions as one luminance channel (a third of the bytes) to :data:`CLOUD_REC_GRAY`."""
    height: int = 32
    """Height of a gray region on the wire (the gray model scales it to 48 in its graph); 32
    kept v6's reading on 43 of 43 lines (4 frames) at 1.7 KB a line with q4|zstd."""
    batch_regions: bool = True
    """Send a frame's regions as one request (one batch) rather than one request each."""
    decider: str = ""
    """A ``policy`` kind deciding per frame and per line (``heuristic``, ``static``, ``linucb``,
    ``thompson``, ``dqn``); empty: the fixed rule above."""
    decider_state: str = ""
    """A JSON file with a learned decider's state (``policy.dumps_state``); ``{class}`` in it
    is replaced by the device class (``phone``, ``iot``)."""
    deadline_ms: float = 1500.0
    """The frame's deadline the decider plans against."""
    det_route: bool = False
    """With a decider: run v4's detector alone first (at ``det_side`` px on the long side) and
    let the decider choose there between sending every line's region (one request) and reading
    the lines on the device (the rest of v4 on those boxes)."""
    det_side: int = 960
    """The detector's input size (long side); 0: the pipeline's own (736 px on the short side)."""
    det_pipeline: str = ""
    """Whose detector runs first: empty for v4's, ``ppocr_v6`` for the cloud's own (its boxes,
    the same as cloud-only's; 230 ms a frame on one core against v4's 150)."""

    def frame_route(self, doubtful: int, lines: int, link_mbit: float) -> bool:
        return (
            lines > 0 and doubtful / lines >= self.frame_share and link_mbit >= self.frame_min_mbit
        )


@dataclass
class Answer:
    """One line of a frame's answer."""

    text: str
    box: Any
    route: str
    confidence: float
    edge_text: str = ""


@dataclass
class FrameResult:
    frame_id: str
    arrival: float
    done: float = 0.0
    lines: list[Answer] = field(default_factory=list)
    bytes_up: int = 0
    cloud_ms: float = 0.0
    device_cpu_s: float = 0.0
    device_busy_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    decision: str = ""
    """The per-frame decision (an arm key) when a decider runs."""
    requests: int = 0
    """Requests sent to the cloud for this frame."""
    link_mbit: float = 0.0
    """The bandwidth estimate the decision saw."""

    @property
    def latency_s(self) -> float:
        return self.done - self.arrival


class Throttle:
    """Runs device compute on one worker thread and stretches it to the device's CPU share."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], Any]) -> tuple[Any, float, float]:
        """``fn()`` -> (its result, thread CPU seconds, wall seconds incl. the throttle)."""
        with self._lock:
            w0, c0 = time.perf_counter(), time.thread_time()
            out = fn()
            cpu = time.thread_time() - c0
            wait = cpu / self.share - (time.perf_counter() - w0)
            if wait > 0:
                time.sleep(wait)
            return out, cpu, time.perf_counter() - w0


FrameOcr = Callable[[bytes], Awaitable[tuple[list[Line], float]]]
"""JPEG bytes -> (the cloud's lines, its compute ms)."""


class FrameClient:
    """The cloud's whole-frame OCR (benchmarks.ocr.cloud_ocr) over one TCP connection: a
    4-byte length and the JPEG up, a 4-byte length and JSON down, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._lock = asyncio.Lock()
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __call__(self, jpeg: bytes) -> tuple[list[Line], float]:
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._conn
            try:
                writer.write(struct.pack(">I", len(jpeg)) + jpeg)
                await writer.drain()
                (n,) = struct.unpack(">I", await reader.readexactly(4))
                doc = json.loads(await reader.readexactly(n))
            except (OSError, asyncio.IncompleteReadError):
                self._conn = None
                writer.close()
                raise
        lines = [Line(d["text"], d["confidence"], d["score"], d["box"]) for d in doc["lines"]]
        return lines, float(doc["compute_ms"])

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class OcrApp:
    """One device's OCR application: ``await app.read(frame_id, jpeg, arrival)``.

    ``system``: ``edge`` (PP-OCRv4 only), ``cloud`` (every frame to the cloud's v6 det+rec) or
    ``hybrid`` (``policy`` per line). ``client`` is the device's open ``SessionClient`` to the
    gateway serving :data:`CLOUD_REC`; ``frame_ocr`` the whole-frame service."""

    def __init__(
        self,
        system: str,
        share: float,
        policy: Policy,
        *,
        client: Any = None,
        frame_ocr: FrameOcr | None = None,
        link_mbit: float = 1000.0,
        deadline_s: float = 30.0,
    ) -> None:
        self.system, self.policy, self.link_mbit = system, policy, link_mbit
        self.throttle = Throttle(share)
        self.client, self.frame_ocr, self.deadline_s = client, frame_ocr, deadline_s
        self.online: Callable[[], bool] = lambda: True
        """Whether the device's link is up (the OS's connectivity state; set by the caller)."""
        self.link: Callable[[], tuple[float, float]] = lambda: (50.0, self.link_mbit)
        """The link estimate (RTT ms, uplink Mbit/s) the decider sees; set by the caller."""
        self.share = share
        self.decider: Any = None
        self._pending = 0
        self._speed: float | None = None
        if system == "hybrid" and policy.decider:
            from benchmarks.ocr.decide import Contexts, LineCosts, line_profile, make_decider

            costs = LineCosts.load()
            if policy.det_pipeline:  # v6 det_small: 227-233 ms a frame (issue 16) and the crops
                costs = replace(costs, det_ms=250.0 / costs.lines_per_frame)
            state, cls = None, "phone" if share >= 1 else "iot"
            if policy.decider_state:  # "{class}" in the path: one trained state per class
                state = json.loads(Path(policy.decider_state.replace("{class}", cls)).read_text())
            profile = line_profile(costs, policy.threshold, det=policy.det_route)
            self.decider = make_decider(policy.decider, profile, state, costs.lines_per_frame)
            self.contexts = Contexts(
                costs.lines_per_frame, share, cls, policy.deadline_ms, det=policy.det_route
            )
            self._det_ms = costs.det_ms * costs.lines_per_frame
            self._v4_ms = costs.v4_ms * costs.lines_per_frame
            """Device CPU ms per frame for v4: the profile's, then what this device measured."""
        self.deferred: list[tuple[FrameResult, int, npt.NDArray[np.float32]]] = []
        self._replays: set[asyncio.Future[int]] = set()
        self.replayed = 0
        self._prefix = uuid.uuid4().hex[:10]
        self._seq = 0
        if system != "cloud":
            self.pipeline = load_pipeline(EDGE_PIPELINE, threads=1)
            # the cascade section lends its cloud decoder (character list, calibration); the
            # app sends regions itself to keep each answer's compute time and bytes
            self.cascade = Cascade(self.pipeline, self._no_refine, policy.threshold)
            self.cascade.charset  # noqa: B018 - read the character list once, up front
            self._det_pipe = self.pipeline
            if policy.det_pipeline:
                self._det_pipe = load_pipeline(policy.det_pipeline, threads=1)

    @staticmethod
    async def _no_refine(x: npt.NDArray[np.float32]) -> dict[str, Any]:
        raise NotImplementedError

    async def _refine(self, x: npt.NDArray[np.float32]) -> tuple[list[Line], int, float]:
        """One request of regions ``[N, C, H, W]`` to the gateway's v6 recogniser: (their
        lines, bytes sent, compute ms)."""
        from edge_agent._convert import OutboundRequest
        from edge_agent._features import encode_features

        features = encode_features(x, self.policy.codec)
        self._seq += 1
        rid = f"ocr-{self._prefix}-{self._seq}"
        answer = await self.client.submit(
            OutboundRequest(
                request_id=rid,
                idempotency_key=rid,
                model_name=CLOUD_REC_GRAY if self.policy.gray else CLOUD_REC,
                model_version="",
                cut_point="",
                features=features,
                deadline=time.time() + self.deadline_s,
                digest=hashlib.sha256(features.payload).digest(),
            )
        )
        out = []
        for best, prob in zip(answer.outputs["best"], answer.outputs["best_prob"], strict=True):
            decoded = ctc_best_path(best, prob, self.cascade.charset)
            raw = line_score(decoded, "min")
            conf = float(apply_calibration([raw], self.cascade.spec.calibration)[0])
            out.append(Line(decoded.text, conf, raw, []))
        if len(out) != x.shape[0]:
            raise ValueError(f"{len(out)} answers for {x.shape[0]} regions")
        return out, len(features.payload), float(answer.cloud_compute_ms)

    def _observe(self, cpu_s: float, profiled_ms: float) -> None:
        """The device's own compute time against the profile's (EMA) sets the share its
        decisions see: on a contended core a quarter-core device gets less than a quarter of
        the profiling core."""
        speed = min(1.0, profiled_ms / max(cpu_s * 1000, 1e-3))
        self._speed = speed if self._speed is None else 0.7 * self._speed + 0.3 * speed
        self.contexts.share = self.share * self._speed

    def _queue_ms(self) -> float:
        """Device compute ahead of a new frame: frames waiting for or in v4 (or the detector
        alone, with ``det_route``), at this device's measured speed."""
        per_frame = self._det_ms if self.policy.det_route else self._v4_ms
        return self._pending * per_frame / (self.share * (self._speed or 1.0))

    def _is_online(self) -> bool:
        return self.client is not None and self.client.connected and self.online()

    async def read(self, frame_id: str, jpeg: bytes, arrival: float) -> FrameResult:
        res = FrameResult(frame_id, arrival)
        if self.deferred and self._is_online():
            task = asyncio.ensure_future(self.replay())  # the link is back: refine what waited
            self._replays.add(task)
            task.add_done_callback(self._replays.discard)
        if self.system == "cloud":
            await self._whole_frame(res, jpeg)
            res.done = time.perf_counter()
            return res
        if self.decider is not None:
            rtt, mbit = self.link()
            res.link_mbit = mbit = mbit if self._is_online() else 0.0
            d = self.decider.decide(self.contexts.frame(rtt, mbit, self._queue_ms()))
            res.decision = d.arm.key
            if d.action is Action.OFFLOAD and d.cut_point == INPUT_CUT and self.frame_ocr:
                await self._whole_frame(res, jpeg)
                res.done = time.perf_counter()
                return res
        self._pending += 1
        try:
            if self.decider is not None and self.policy.det_route:
                got = await self._detect_first(res, jpeg, arrival)
                if got is None:  # every region went to the cloud
                    res.done = time.perf_counter()
                    return res
                bgr, lines = got
            else:
                (bgr, lines), cpu, busy = await asyncio.to_thread(
                    self.throttle.run, lambda: self._read_locally(jpeg)
                )
                res.device_cpu_s += cpu
                res.device_busy_s += busy
                if self.decider is not None:
                    self._observe(cpu, self._v4_ms)
        finally:
            self._pending -= 1
        res.lines = [Answer(ln.text, ln.box, "edge", ln.confidence, ln.text) for ln in lines]
        if self.system == "edge":
            res.done = time.perf_counter()
            return res
        online = self._is_online()
        if self.decider is not None:
            send, defer = self._decide_lines(lines, online, arrival)
        else:
            doubtful = [i for i, ln in enumerate(lines) if ln.confidence < self.policy.threshold]
            send, defer = (doubtful, []) if online else ([], doubtful)
            if (
                send
                and self.frame_ocr is not None
                and self.policy.frame_route(len(send), len(lines), self.link_mbit)
            ):
                await self._whole_frame(res, jpeg)
                res.done = time.perf_counter()
                return res
        if send or defer:
            regions, cpu, busy = await asyncio.to_thread(
                self.throttle.run,
                lambda: [self._region_input(bgr, lines[i].box) for i in [*send, *defer]],
            )
            res.device_cpu_s += cpu
            res.device_busy_s += busy
            for i, x in zip(defer, regions[len(send) :], strict=True):
                res.lines[i].route = "deferred"
                self.deferred.append((res, i, x))
            if send and self.policy.batch_regions:
                await self._regions(res, send, regions[: len(send)])
            elif send:
                await asyncio.gather(
                    *(self._region(res, i, x) for i, x in zip(send, regions, strict=False))
                )
        res.done = time.perf_counter()
        return res

    def _decide_lines(
        self, lines: list[Line], online: bool, arrival: float
    ) -> tuple[list[int], list[int]]:
        """Per line through the decider: (lines whose region goes now, lines deferred)."""
        rtt, mbit = self.link()
        elapsed = (time.perf_counter() - arrival) * 1000
        send, defer = [], []
        for i, ln in enumerate(lines):
            d = self.decider.decide(
                self.contexts.line(ln.confidence, rtt, mbit if online else 0.0, elapsed)
            )
            if d.action is Action.OFFLOAD and online:
                send.append(i)
            elif d.action is Action.DEFER or (d.action is Action.OFFLOAD and not online):
                defer.append(i)
        return send, defer

    async def _detect_first(
        self, res: FrameResult, jpeg: bytes, arrival: float
    ) -> tuple[npt.NDArray[np.uint8], list[Line]] | None:
        """The detector alone, then the decider: every region to the cloud in one request
        (returns None), or the rest of v4 on the device (returns its lines)."""
        (bgr, values, regions), cpu, busy = await asyncio.to_thread(
            self.throttle.run, lambda: self._detect(jpeg)
        )
        res.device_cpu_s += cpu
        res.device_busy_s += busy
        self._observe(cpu, self._det_ms)
        rtt, mbit = self.link()
        online = self._is_online()
        elapsed = (time.perf_counter() - arrival) * 1000
        d = self.decider.decide(self.contexts.detected(rtt, mbit if online else 0.0, elapsed))
        res.decision = f"{res.decision}>{d.arm.key}"
        if d.action is Action.OFFLOAD and d.cut_point == "boxes" and online and regions:
            res.lines = [Answer("", b, "region", 0.0) for b in values["boxes"]]
            await self._regions(res, list(range(len(regions))), regions)
            return None
        lines, cpu, busy = await asyncio.to_thread(
            self.throttle.run, lambda: self._recognize(values)
        )
        res.device_cpu_s += cpu
        res.device_busy_s += busy
        return bgr, lines

    def _detect(
        self, jpeg: bytes
    ) -> tuple[npt.NDArray[np.uint8], dict[str, Any], list[npt.NDArray[np.float32]]]:
        """v4's detector steps at ``det_side`` px on the long side, and every box's region."""
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("the frame is not an image")
        image = np.asarray(bgr, np.uint8)
        pipe = self._det_pipe
        steps = pipe.spec.steps
        n = next(i for i, st in enumerate(steps) if st.op == "db_boxes") + 1
        pre = None
        if self.policy.det_side:
            pre = {**pipe.step_params("det_preprocess"), "limit": "max",
                   "short_side": self.policy.det_side}  # fmt: skip
        values = _run_steps(pipe, {pipe.spec.input: image}, steps[:n], pre)
        return image, values, [self._region_input(image, b) for b in values["boxes"]]

    def _recognize(self, values: dict[str, Any]) -> list[Line]:
        """The rest of v4 (crops, orientation, recogniser, confidence) on detected boxes."""
        steps = self.pipeline.spec.steps
        n = next(i for i, st in enumerate(steps) if st.op == "db_boxes") + 1
        out = _run_steps(self.pipeline, dict(values), steps[n:], None)
        return list(out["lines"])

    def _read_locally(self, jpeg: bytes) -> tuple[npt.NDArray[np.uint8], list[Line]]:
        """Decode the JPEG and run PP-OCRv4 on it (the device's compute for a frame)."""
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("the frame is not an image")
        image = np.asarray(bgr, np.uint8)
        return image, self.pipeline(image)["lines"]

    def _region_input(self, bgr: npt.NDArray[np.uint8], box: Any) -> npt.NDArray[np.float32]:
        s, p = self.cascade.spec, self.policy
        if not p.gray:
            return region_input(bgr, box, s.height, s.min_width, s.max_width)
        x = region_input(bgr, box, p.height, 8, s.max_width * p.height // s.height)
        # BGR luminance, still in [-1, 1]
        return (0.114 * x[:, :1] + 0.587 * x[:, 1:2] + 0.299 * x[:, 2:3]).astype(np.float32)

    async def _region(self, res: FrameResult, i: int, x: npt.NDArray[np.float32]) -> None:
        await self._regions(res, [i], [x])

    async def _regions(
        self, res: FrameResult, idx: list[int], xs: list[npt.NDArray[np.float32]]
    ) -> None:
        """Lines ``idx`` of ``res`` refined from their regions ``xs`` in one request."""
        try:
            batch = xs[0] if len(xs) == 1 else stack_regions(xs)[0]
            lines, sent, ms = await self._refine(batch)
        except Exception as exc:  # any failure keeps the device's lines
            for i in idx:
                res.lines[i].route = "edge_fallback"
            res.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        res.bytes_up += sent
        res.cloud_ms += ms
        res.requests += 1
        for i, line in zip(idx, lines, strict=True):
            res.lines[i].text, res.lines[i].confidence, res.lines[i].route = (
                line.text,
                line.confidence,
                "region" if res.lines[i].route != "deferred" else "replayed",
            )

    async def _whole_frame(self, res: FrameResult, jpeg: bytes) -> None:
        assert self.frame_ocr is not None
        try:
            lines, ms = await self.frame_ocr(jpeg)
        except Exception as exc:  # the device's lines stay
            res.errors.append(f"frame: {type(exc).__name__}: {exc}"[:200])
            for a in res.lines:
                a.route = "edge_fallback"
            return
        res.bytes_up += len(jpeg)
        res.cloud_ms += ms
        res.requests += 1
        res.lines = [Answer(ln.text, ln.box, "frame", ln.confidence) for ln in lines]

    async def replay(self) -> int:
        """Refines every deferred region (once); returns how many were refined."""
        pending, self.deferred = self.deferred, []
        await asyncio.gather(*(self._region(res, i, x) for res, i, x in pending))
        done = sum(res.lines[i].route == "replayed" for res, i, _ in pending)
        self.replayed += done
        return done

    async def drain(self) -> int:
        """Waits for replays under way and refines what is still deferred; returns how many
        deferred lines were refined in all."""
        await asyncio.gather(*self._replays)
        if self.deferred:
            await self.replay()
        return self.replayed


def _run_steps(
    pipeline: Any, values: dict[str, Any], steps: list[Any], pre: dict[str, Any] | None
) -> dict[str, Any]:
    """Runs pipeline ``steps`` on ``values`` (``pre``: det_preprocess's parameters instead)."""
    from common.pipeline._registry import STEPS

    for st in steps:
        params = pre if (pre is not None and st.op == "det_preprocess") else st.params
        result = STEPS[st.op](pipeline, *(values[v] for v in st.inputs), **params)
        if len(st.outputs) == 1:
            values[st.outputs[0]] = result
        else:
            values.update(zip(st.outputs, result, strict=True))
    return values


def score(answers: list[Answer], truth: list[dict[str, Any]]) -> dict[str, int]:
    """Per frame: ground-truth lines and characters, lines read exactly, characters correct
    (matching characters of the matched line, difflib), answer lines by route."""
    matched = match([t["box"] for t in truth], [a.box for a in answers], 0.5, over="min")
    out = {"lines": len(truth), "exact": 0, "chars": 0, "chars_correct": 0}
    for i, t in enumerate(truth):
        out["chars"] += len(t["text"])
        if i in matched:
            got = answers[matched[i]].text
            out["exact"] += got == t["text"]
            sm = difflib.SequenceMatcher(None, t["text"], got, autojunk=False)
            out["chars_correct"] += sum(b.size for b in sm.get_matching_blocks())
    for r in ROUTES:
        out[f"route_{r}"] = sum(a.route == r for a in answers)
    return out
