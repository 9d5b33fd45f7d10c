"""The one way from a bundle manifest to a :class:`BundleProfile`.

The gateway (no measurements: every segment counts ``default_segment_ms``), the edge agent
(segment times measured on the device, the coded size of one real activation per cut) and the
trace builder (batch-1 times, every traced codec, the raw-input pseudo cut) all call
:func:`profile_from_manifest`; they differ only in the measurements they pass in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from common.errors import InvalidArgument
from policy._profile import BundleProfile, CodecCost, CutPointCost, ExitCost

if TYPE_CHECKING:  # importing common.bundle pulls in onnx: keep ``import policy`` light
    from common.bundle import Manifest

DISABLED_EXIT_THRESHOLD = 1.01
"""Threshold of an exit whose manifest threshold is null (disabled): above any confidence, so the
exit never answers on confidence alone."""


def profile_from_manifest(
    manifest: Manifest,
    *,
    segment_ms: Mapping[str, float] | None = None,
    default_segment_ms: float = 1.0,
    tail_ms: Mapping[str, float] | None = None,
    codecs: Mapping[str, Mapping[str, CodecCost]] | None = None,
    extra_cuts: Sequence[CutPointCost] = (),
    model: str | None = None,
) -> BundleProfile:
    """A policy's view of the bundle described by ``manifest``.

    All times are milliseconds. ``segment_ms`` maps edge-chain segment -> measured compute time;
    a segment without a measurement counts ``default_segment_ms``. An exit's ``segment_ms`` is the
    compute from the previous exit up to its own segment. ``tail_ms`` maps cut point -> measured
    cloud tail time; otherwise the tail is the edge-chain segments after the cut (at least
    ``default_segment_ms``). ``codecs`` maps cut point -> codec spec -> cost; otherwise a cut has
    one codec, ``raw``, with the float32 size from the manifest. ``extra_cuts`` (e.g. the raw-input
    pseudo cut of a trace) come first. ``model`` defaults to the manifest's name. Thresholds and
    temperatures come from the manifest (a disabled exit gets :data:`DISABLED_EXIT_THRESHOLD`).
    """
    chain = list(manifest.edge_chain)
    seg = dict(segment_ms or {})

    def ms(segments: Sequence[str]) -> float:
        return sum(seg.get(s, default_segment_ms) for s in segments)

    def position(segment: str, what: str) -> int:
        if segment not in chain:
            raise InvalidArgument(
                f"manifest {manifest.name}: {what} runs on {segment!r}, not on the edge chain {chain}"
            )
        return chain.index(segment)

    exits: list[ExitCost] = []
    exit_pos: list[int] = []
    prev = -1
    for ex in sorted(manifest.exits, key=lambda e: e.index):
        pos = position(ex.segment, f"exit {ex.name}")
        exits.append(
            ExitCost(
                name=ex.name,
                segment_ms=ms(chain[prev + 1 : pos + 1]),
                threshold=float(
                    ex.threshold if ex.threshold is not None else DISABLED_EXIT_THRESHOLD
                ),
                temperature=float(ex.temperature),
            )
        )
        exit_pos.append(pos)
        prev = pos
    cuts = list(extra_cuts)
    for cut in manifest.cut_points:
        pos = position(cut.head[-1], f"cut point {cut.name}")
        after = max((i for i, p in enumerate(exit_pos) if p <= pos), default=-1)
        rest = chain[pos + 1 :]
        tail = (tail_ms or {}).get(cut.name, ms(rest) if rest else default_segment_ms)
        costs = dict((codecs or {}).get(cut.name) or {"raw": CodecCost(bytes=cut.float32_bytes)})
        cuts.append(
            CutPointCost(name=cut.name, after_exit=after, tail_ms=float(tail), codecs=costs)
        )
    return BundleProfile(
        model=manifest.name if model is None else model, exits=tuple(exits), cuts=tuple(cuts)
    )


__all__ = ["DISABLED_EXIT_THRESHOLD", "profile_from_manifest"]
