"""The OCR hybrid's decisions through the policy engine (issue 16).

Two kinds of decision, both ``policy.Policy.decide`` on one profile (:func:`line_profile`):

* per frame, before PP-OCRv4 runs (exit ``camera``, nothing computed yet): ``OFFLOAD@input/jpeg``
  sends the frame's JPEG to the cloud's PP-OCRv6 det+rec; anything else reads it on the device;
* per line, after v4 (exit ``v4``, the line's calibrated confidence): ``EXIT_LOCAL`` answers on
  the device, ``OFFLOAD@region/q4|zstd`` sends its region (the frame's regions go together, one
  request), ``DEFER`` answers now and refines when the link is back.

Units: the policies are trained in the trace simulator on *lines*, each carrying its share of
its frame (:mod:`benchmarks.ocr.policies`): compute, bytes and cloud time per line, and the
frame's deadline and RTT divided by the mean lines per frame, so that a line's latency over its
deadline is its frame's. The fleet asks in the same units (:class:`Contexts`), so a policy
trained there sees the same features here: every time-like field divided by
``lines_per_frame``, bandwidth as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policy import (
    INPUT_CUT,
    BundleProfile,
    CodecCost,
    CutPointCost,
    DecisionContext,
    ExitCost,
    HeuristicPolicy,
    LatencyModel,
    ObjectiveWeights,
    Policy,
    Trace,
    entropy_from_confidence,
    make_policy,
    policy_from_state,
)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TRACE_COSTS = RESULTS / "policy_trace_ocr.json"
CAMERA, DET, V4, REGION, REGION_CODEC, JPEG = "camera", "det", "v4", "region", "q4|zstd", "jpeg"
BOXES = "boxes"
"""The cut after the detector alone: every detected line's region, in one request."""
FRAME_DEADLINE_MS = 1500.0
"""A frame's reading is wanted within 1.5 s (an SLA, below cloud-only's p95 of 1.6-2.3 s)."""


def ocr_weights(lines_per_frame: float) -> ObjectiveWeights:
    """The OCR objective, summed over a frame's lines: 4 per wrong line; the frame's latency
    over its deadline, plus 1 for a breach (charged a line's share on each line); 0.1 per cloud
    request and 1 per cloud CPU second; 0.2 per 10 KB sent. The simulator's default charges
    0.1 per cloud *millisecond* (a Fashion-MNIST scale), which would price a 0.5 s frame like
    12 wrong lines, and latency per line, which would count a frame's latency 11 times."""
    return ObjectiveWeights(
        latency=1.0 / lines_per_frame, breach=1.0 / lines_per_frame, cloud_per_ms=0.001
    )


@dataclass(frozen=True)
class LineCosts:
    """Per-line costs measured by ``benchmarks.ocr.policies`` (policy_trace_ocr.json)."""

    lines_per_frame: float = 10.975
    v4_ms: float = 37.0
    region_ms: float = 12.2
    region_bytes: float = 1541.0
    frame_ms: float = 46.0
    jpeg_bytes: float = 6166.0
    det_ms: float = 10.9
    """v4's detector alone at 960 px on the long side, with the crops: 120 ms a frame (measured
    offline on 8 hard frames, BENCHMARKS.md); the whole v4 pass spends 22 ms a line on its
    detector at 736 px, so the recogniser's share is ``v4_ms - 22``."""

    @classmethod
    def load(cls, path: Path = TRACE_COSTS) -> LineCosts:
        doc = json.loads(path.read_text())
        return cls(
            doc["lines"] / doc["frames"],
            doc["v4_ms_per_line"],
            doc["region_ms_per_line"],
            doc["region_bytes_per_line"],
            doc["frame_ms_per_line"],
            doc["jpeg_bytes_per_line"],
        )


def line_profile(c: LineCosts, threshold: float = 0.9, det: bool = False) -> BundleProfile:
    """``camera`` (nothing run, 0 ms) -> ``v4`` (PP-OCRv4, its share per line); the input cut
    (the JPEG, before v4) and the region cut (after v4). With ``det``: ``camera`` -> ``det``
    (the detector alone) -> ``v4`` (the rest), and the ``boxes`` cut after ``det`` (every
    line's region, read in the cloud)."""
    if det:
        return BundleProfile(
            "ppocr_v4_frame_lines_det",
            (
                ExitCost(CAMERA, 0.0, threshold=1.0),
                ExitCost(DET, c.det_ms, threshold=1.0),
                ExitCost(V4, max(c.v4_ms - 22.0, 1.0), threshold=threshold),
            ),
            (
                CutPointCost(INPUT_CUT, -1, c.frame_ms, {JPEG: CodecCost(int(c.jpeg_bytes))}),
                CutPointCost(BOXES, 1, c.region_ms, {REGION_CODEC: CodecCost(int(c.region_bytes))}),
                CutPointCost(
                    REGION, 2, c.region_ms, {REGION_CODEC: CodecCost(int(c.region_bytes))}
                ),
            ),
        )
    return BundleProfile(
        "ppocr_v4_frame_lines",
        (ExitCost(CAMERA, 0.0, threshold=1.0), ExitCost(V4, c.v4_ms, threshold=threshold)),
        (
            CutPointCost(INPUT_CUT, -1, c.frame_ms, {JPEG: CodecCost(int(c.jpeg_bytes))}),
            CutPointCost(REGION, 1, c.region_ms, {REGION_CODEC: CodecCost(int(c.region_bytes))}),
        ),
    )


def frame_trace(trace: Trace, profile: BundleProfile) -> Trace:
    """The per-line trace (one exit ``v4``) with the ``camera`` exit in front: nothing is known
    there (confidence 0) and answering there is always wrong."""
    n = len(trace)
    zero = np.zeros((n, 1), np.float32)
    return Trace(
        profile,
        np.concatenate([zero, trace.confidences], axis=1),
        np.concatenate(
            [entropy_from_confidence(zero.astype(np.float64)).astype(np.float32), trace.entropies],
            axis=1,
        ),
        np.concatenate([np.zeros((n, 1), bool), trace.correct], axis=1),
        trace.cloud_correct,
        trace.options,
        trace.source + ", camera exit in front",
    )


def latency_model(profile: BundleProfile) -> LatencyModel:
    """Compute as profiled on one phone core (the share comes with each context), no load term."""
    return LatencyModel(profile, edge_slowdown=1.0, load_gain=0.0, cloud_queue_ms=2.0)


def make_decider(
    kind: str,
    profile: BundleProfile,
    state: dict[str, Any] | None = None,
    lines_per_frame: float = LineCosts.lines_per_frame,
) -> Policy:
    """``heuristic`` (objective-priced cut selection), ``static`` (threshold, regions) or a
    learned kind restored from ``state`` (fresh when None)."""
    if kind == "heuristic":
        return HeuristicPolicy(
            profile,
            latency_model=latency_model(profile),
            weights=ocr_weights(lines_per_frame),
            hysteresis=0.05,
        )
    if state is not None:
        return policy_from_state(state, profile)
    if kind == "static":
        return make_policy(kind, profile, cut_point=REGION, codec=REGION_CODEC)
    return make_policy(kind, profile, latency_model=latency_model(profile))


@dataclass
class Contexts:
    """Builds the device's decision contexts in per-line units (see the module doc)."""

    lines_per_frame: float
    share: float
    device_class: str
    deadline_ms: float = FRAME_DEADLINE_MS
    det: bool = False
    """The profile has the ``det`` exit (lines are then decided at exit 2)."""

    def _ctx(self, **kw: Any) -> DecisionContext:
        s = self.lines_per_frame
        return DecisionContext(
            rtt_ms=kw.pop("rtt_ms") / s,
            deadline_ms=self.deadline_ms / s,
            elapsed_ms=kw.pop("elapsed_ms", 0.0) / s,
            queue_ms=kw.pop("queue_ms", 0.0) / s,
            compute_share=self.share,
            device_class=self.device_class,
            edge_load=0.0,
            replay_available=True,
            **kw,
        )

    def frame(self, rtt_ms: float, bandwidth_mbps: float, queue_ms: float) -> DecisionContext:
        """Before v4: nothing computed, ``queue_ms`` of device work ahead of this frame."""
        return self._ctx(
            exit_index=0, confidences=(0.0,), entropy=float(entropy_from_confidence(np.zeros(1))[0]),
            rtt_ms=rtt_ms, bandwidth_mbps=bandwidth_mbps, queue_ms=queue_ms,
        )  # fmt: skip

    def detected(self, rtt_ms: float, bandwidth_mbps: float, elapsed_ms: float) -> DecisionContext:
        """After the detector alone (``det``): no line read yet."""
        return self._ctx(
            exit_index=1, confidences=(0.0, 0.0), entropy=float(entropy_from_confidence(np.zeros(1))[0]),
            rtt_ms=rtt_ms, bandwidth_mbps=bandwidth_mbps, elapsed_ms=elapsed_ms,
        )  # fmt: skip

    def line(
        self, confidence: float, rtt_ms: float, bandwidth_mbps: float, elapsed_ms: float
    ) -> DecisionContext:
        """After v4, for one line: its calibrated confidence, the frame's time so far."""
        entropy = float(entropy_from_confidence(np.array([confidence]))[0])
        before = (0.0, 0.0) if self.det else (0.0,)
        return self._ctx(
            exit_index=len(before), confidences=(*before, confidence), entropy=entropy,
            rtt_ms=rtt_ms, bandwidth_mbps=bandwidth_mbps, elapsed_ms=elapsed_ms,
        )  # fmt: skip


__all__ = [
    "BOXES",
    "FRAME_DEADLINE_MS",
    "Contexts",
    "LineCosts",
    "frame_trace",
    "latency_model",
    "line_profile",
    "make_decider",
    "ocr_weights",
]
