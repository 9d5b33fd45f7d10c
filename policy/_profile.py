"""What a policy knows about a model bundle: exits, cut points, codec sizes and compute times, and
the latency model built from them (Neurosurgeon-style: per-segment compute plus transfer)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument, NotFound
from policy._types import Action, Arm, DecisionContext

INPUT_CUT = "input"
"""Name of the pseudo cut point that sends the raw (preprocessed) input to the full cloud model."""


@dataclass(frozen=True, slots=True)
class ExitCost:
    """An exit as the cost model sees it (the manifest declares exits as ``common.bundle.ExitSpec``). ``segment_ms`` is the compute from the previous exit (or the
    input) up to and including this exit's head, measured on the profiling CPU."""

    name: str
    segment_ms: float
    threshold: float = 0.9
    temperature: float = 1.0


@dataclass(frozen=True, slots=True)
class CodecCost:
    """Coded size of one cut's activation and the codec's measured times (per image)."""

    bytes: int
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    accuracy_drop: float = 0.0
    """Accuracy points lost against uncompressed features (from the codec sweep)."""


@dataclass(frozen=True, slots=True)
class CutPointCost:
    """A cut point as the cost model sees it (declared by ``common.bundle.CutPointSpec``). Its features exist once exit ``after_exit`` has run (-1: the raw input)."""

    name: str
    after_exit: int
    tail_ms: float
    codecs: dict[str, CodecCost] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BundleProfile:
    """Exits in order and the cut points the cloud can resume from."""

    model: str
    exits: tuple[ExitCost, ...]
    cuts: tuple[CutPointCost, ...]

    def __post_init__(self) -> None:
        if not self.exits:
            raise InvalidArgument("profile: a bundle profile needs at least one exit")
        for cut in self.cuts:
            if not -1 <= cut.after_exit < len(self.exits):
                raise InvalidArgument(f"profile: cut {cut.name!r} names exit {cut.after_exit}")
            if not cut.codecs:
                raise InvalidArgument(f"profile: cut {cut.name!r} lists no codec")

    @property
    def n_exits(self) -> int:
        return len(self.exits)

    def cut(self, name: str) -> CutPointCost:
        for cut in self.cuts:
            if cut.name == name:
                return cut
        raise NotFound(f"profile: unknown cut point {name!r}; known: {[c.name for c in self.cuts]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleProfile:
        """Build from :meth:`to_dict` output; errors name the missing key."""
        try:
            exits = tuple(ExitCost(**e) for e in data["exits"])
            cuts = tuple(
                CutPointCost(
                    name=c["name"],
                    after_exit=int(c["after_exit"]),
                    tail_ms=float(c["tail_ms"]),
                    codecs={k: CodecCost(**v) for k, v in c["codecs"].items()},
                )
                for c in data["cuts"]
            )
            return cls(model=str(data.get("model", "")), exits=exits, cuts=cuts)
        except (KeyError, TypeError) as exc:
            raise InvalidArgument(f"profile: malformed policy profile: {exc!r}") from exc

    @classmethod
    def load(cls, path: str | Path) -> BundleProfile:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"profile: cannot read {path}: {exc}") from exc
        return cls.from_dict(data)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Predicts request latency from a profile and a network estimate.

    ``edge_slowdown`` scales profiled compute to the device class; ``load_gain`` is how much a
    fully loaded device slows down (1.0 = twice as slow at load 1); ``cloud_queue_ms`` is the
    expected batching wait in the gateway.
    """

    profile: BundleProfile
    edge_slowdown: float = 4.0
    load_gain: float = 1.0
    cloud_queue_ms: float = 2.0

    def edge_factor(self, edge_load: float, share: float = 1.0) -> float:
        """Profiled compute time -> device time, at ``edge_load`` with ``share`` of the core."""
        return self.edge_slowdown * (1.0 + self.load_gain * edge_load) / share

    def local_ms(
        self, from_exit: int, to_exit: int, edge_load: float = 0.0, share: float = 1.0
    ) -> float:
        """Device time to run from exit ``from_exit`` (exclusive; -1 = input) to ``to_exit``."""
        seg = sum(e.segment_ms for e in self.profile.exits[from_exit + 1 : to_exit + 1])
        return seg * self.edge_factor(edge_load, share)

    @staticmethod
    def transfer_ms(n_bytes: float, bandwidth_mbps: float) -> float:
        """Serialisation time of ``n_bytes`` on an uplink of ``bandwidth_mbps`` Mbit/s."""
        if bandwidth_mbps <= 0.0:
            return float("inf")
        return n_bytes * 8.0 / (bandwidth_mbps * 1000.0)

    def offload_ms(
        self,
        cut: str,
        codec: str,
        rtt_ms: float,
        bandwidth_mbps: float,
        edge_load: float = 0.0,
        share: float = 1.0,
    ) -> float:
        """Time from the offload decision to the answer: encode, transfer, RTT, queue, tail."""
        spec = self.profile.cut(cut)
        cost = spec.codecs[codec]
        return (
            cost.encode_ms * self.edge_factor(edge_load, share)
            + self.transfer_ms(cost.bytes, bandwidth_mbps)
            + rtt_ms
            + self.cloud_queue_ms
            + cost.decode_ms
            + spec.tail_ms
        )


def expected_latency_ms(model: LatencyModel, ctx: DecisionContext, arm: Arm) -> float:
    """Predicted total latency of the request if ``arm`` is taken now (later steps exit)."""
    share = ctx.compute_share
    if arm.action is Action.CONTINUE_LOCAL:
        step = model.local_ms(ctx.exit_index, ctx.exit_index + 1, ctx.edge_load, share)
        return ctx.elapsed_ms + ctx.queue_ms + step
    if arm.action is Action.OFFLOAD:
        return ctx.elapsed_ms + model.offload_ms(
            arm.cut_point, arm.codec, ctx.rtt_ms, ctx.bandwidth_mbps, ctx.edge_load, share
        )
    return ctx.elapsed_ms


__all__ = [
    "INPUT_CUT",
    "BundleProfile",
    "CodecCost",
    "CutPointCost",
    "ExitCost",
    "LatencyModel",
    "expected_latency_ms",
]
