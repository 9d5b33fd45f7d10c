"""Head runtime: runs the bundle's edge chain segment by segment with onnxruntime and evaluates
the exits with temperature-scaled (calibrated) confidence."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np

from common.confidence import softmax
from common.errors import InvalidArgument
from edge_agent._types import ExitOutput

if TYPE_CHECKING:
    import onnxruntime as ort

    from common.bundle import Bundle, CutPointSpec

log = logging.getLogger(__name__)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of one probability vector."""
    q = p[p > 0]
    return float(-(q * np.log(q)).sum())


@dataclasses.dataclass
class HeadState:
    """Progress of one sample along the edge chain."""

    tensors: dict[str, np.ndarray]
    next_segment: int = 0
    exits: list[ExitOutput] = dataclasses.field(default_factory=list)
    compute_s: float = 0.0

    @property
    def last_exit(self) -> ExitOutput | None:
        """The most recently evaluated exit."""
        return self.exits[-1] if self.exits else None

    def best_exit(self) -> ExitOutput | None:
        """The best local answer so far: the deepest exit evaluated (deeper exits are the more
        accurate ones in a calibrated cascade)."""
        return self.exits[-1] if self.exits else None


class EdgeRuntime:
    """The bundle's edge chain with its exits, ready to run one sample at a time."""

    def __init__(self, bundle: Bundle, threads: int = 1) -> None:
        self.bundle = bundle
        m = bundle.manifest
        self.chain: list[str] = list(m.edge_chain)
        self._sessions: dict[str, ort.InferenceSession] = {
            name: bundle.session(name, threads=threads) for name in self.chain
        }
        self._inputs = {name: [i.name for i in m.segment(name).inputs] for name in self.chain}
        self._outputs = {name: [o.name for o in m.segment(name).outputs] for name in self.chain}
        self.exits = list(bundle.exits)
        self.thresholds: dict[str, float | None] = {e.name: e.threshold for e in self.exits}
        self.temperatures: dict[str, float] = {e.name: e.temperature for e in self.exits}
        self.classes = list(m.classes)
        self._cut_after: dict[str, list[CutPointSpec]] = {}
        for cut in bundle.cut_points:
            self._cut_after.setdefault(cut.head[-1], []).append(cut)
        log.info("edge runtime %s: chain %s, exits %s", bundle.name, self.chain, self.thresholds)

    @property
    def final_exit_index(self) -> int:
        """Index of the final exit."""
        return self.exits[-1].index

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Replace per-exit thresholds (from a PolicyUpdate); unknown exit names are ignored."""
        for name, value in thresholds.items():
            if name in self.thresholds:
                self.thresholds[name] = float(value)
            else:
                log.warning("policy names unknown exit %r; ignored", name)

    def prepare(self, sample: np.ndarray) -> np.ndarray:
        """Raw uint8 image (HW/NHW per the manifest) or an already preprocessed float32 tensor
        -> float32 NCHW batch of one."""
        arr = np.asarray(sample)
        if arr.dtype == np.uint8:
            return self.bundle.preprocess(arr)
        if arr.dtype != np.float32:
            raise InvalidArgument(f"input must be uint8 (raw) or float32, got {arr.dtype}")
        want = self.bundle.manifest.input.shape[1:]
        if list(arr.shape) == list(want):
            arr = arr[None]
        if list(arr.shape[1:]) != list(want):
            raise InvalidArgument(f"input shape {list(arr.shape)} does not match {want}")
        return arr

    def start(self, x: np.ndarray) -> HeadState:
        """A fresh state for the preprocessed batch-of-one ``x``."""
        return HeadState(tensors={self.bundle.manifest.input.name: x})

    def done(self, state: HeadState) -> bool:
        """True when every segment of the chain ran."""
        return state.next_segment >= len(self.chain)

    def step(self, state: HeadState) -> list[ExitOutput]:
        """Run the next segment of the chain; return the exits it evaluated."""
        name = self.chain[state.next_segment]
        t0 = time.perf_counter()
        feeds = {i: state.tensors[i] for i in self._inputs[name]}
        outs = self._sessions[name].run(self._outputs[name], feeds)
        state.tensors.update(zip(self._outputs[name], outs, strict=True))
        state.next_segment += 1
        found = []
        for spec in self.exits:
            if spec.segment == name:
                p = softmax(state.tensors[spec.logits][0], self.temperatures[spec.name])
                found.append(
                    ExitOutput(
                        name=spec.name,
                        index=spec.index,
                        probabilities=p.astype(np.float32),
                        confidence=float(p.max()),
                        entropy=entropy(p),
                        threshold=self.thresholds[spec.name],
                    )
                )
        state.exits.extend(found)
        state.compute_s += time.perf_counter() - t0
        return found

    def run_to_end(self, state: HeadState) -> None:
        """Run the remaining segments (the best local answer is then the final exit)."""
        while not self.done(state):
            self.step(state)

    def available_cuts(self, state: HeadState) -> list[CutPointSpec]:
        """Cut points whose tensor the state already holds, earliest first."""
        return [c for c in self.bundle.cut_points if c.name in state.tensors]

    def embedding(self, state: HeadState, tensor: str) -> np.ndarray | None:
        """L2-normalised global-average-pooled value of ``tensor`` (None until computed)."""
        value = state.tensors.get(tensor)
        if value is None:
            return None
        v = np.asarray(value[0], dtype=np.float32)
        if v.ndim > 1:
            v = v.reshape(v.shape[0], -1).mean(axis=1)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 and math.isfinite(norm) else v


__all__ = ["EdgeRuntime", "HeadState", "entropy"]
