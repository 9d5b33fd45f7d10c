"""Traces: per test image, what every option would have produced (calibrated confidence and
correctness at each exit, correctness of the cloud answer for each cut point and codec), plus the
bundle's profile (compute times, coded sizes). The simulator replays them; ``policy.traces``
builds them from a real bundle, :func:`synthetic_trace` makes a stand-in for tests."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from common.errors import InvalidArgument
from policy._profile import INPUT_CUT, BundleProfile, CodecCost, CutPointCost, ExitCost


@dataclass(frozen=True)
class Trace:
    """Replayable per-image outcomes. ``options[j]`` is the (cut point, codec) whose cloud answer
    is ``cloud_correct[:, j]``."""

    profile: BundleProfile
    confidences: npt.NDArray[np.float32]
    """(N, K) calibrated top-1 confidence at each exit."""
    entropies: npt.NDArray[np.float32]
    """(N, K) entropy of the calibrated distribution at each exit."""
    correct: npt.NDArray[np.bool_]
    """(N, K) whether each exit's top-1 is right."""
    cloud_correct: npt.NDArray[np.bool_]
    """(N, J) whether the cloud answer after offloading with option j is right."""
    options: tuple[tuple[str, str], ...]
    source: str = "synthetic"
    """Where it came from: "synthetic" or the bundle name and version."""

    def __post_init__(self) -> None:
        n, k = self.confidences.shape
        if k != self.profile.n_exits or self.correct.shape != (n, k):
            raise InvalidArgument("trace: exit arrays disagree with the profile's exits")
        if self.cloud_correct.shape != (n, len(self.options)):
            raise InvalidArgument("trace: cloud_correct does not match the offload options")

    def __len__(self) -> int:
        return int(self.confidences.shape[0])

    def option_index(self, cut: str, codec: str) -> int:
        return self.options.index((cut, codec))

    def subset(self, idx: npt.NDArray[np.int64]) -> Trace:
        """The trace restricted to images ``idx``."""
        return Trace(
            self.profile,
            self.confidences[idx],
            self.entropies[idx],
            self.correct[idx],
            self.cloud_correct[idx],
            self.options,
            self.source,
        )

    def truncate(self, n_exits: int) -> Trace:
        """The trace as seen by a device that holds only the first ``n_exits`` exits (and the cut
        points whose features it can compute); the cloud still answers from the full model."""
        if not 1 <= n_exits <= self.profile.n_exits:
            raise InvalidArgument(f"trace: cannot keep {n_exits} of {self.profile.n_exits} exits")
        cuts = tuple(c for c in self.profile.cuts if c.after_exit < n_exits)
        keep = [j for j, (cut, _) in enumerate(self.options) if any(c.name == cut for c in cuts)]
        profile = BundleProfile(self.profile.model, self.profile.exits[:n_exits], cuts)
        return Trace(
            profile,
            self.confidences[:, :n_exits],
            self.entropies[:, :n_exits],
            self.correct[:, :n_exits],
            self.cloud_correct[:, keep],
            tuple(self.options[j] for j in keep),
            self.source,
        )

    def save(self, path: str | Path) -> None:
        """Write a compressed ``.npz`` (arrays plus JSON metadata)."""
        meta = {"profile": self.profile.to_dict(), "options": self.options, "source": self.source}
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            confidences=self.confidences.astype(np.float16),
            entropies=self.entropies.astype(np.float16),
            correct=np.packbits(self.correct, axis=0),
            cloud_correct=np.packbits(self.cloud_correct, axis=0),
            n=np.array([len(self)]),
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )
        Path(path).write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        try:
            with np.load(path) as z:
                n = int(z["n"][0])
                meta = json.loads(z["meta"].tobytes().decode())
                return cls(
                    profile=BundleProfile.from_dict(meta["profile"]),
                    confidences=z["confidences"].astype(np.float32),
                    entropies=z["entropies"].astype(np.float32),
                    correct=np.unpackbits(z["correct"], axis=0, count=n).astype(bool),
                    cloud_correct=np.unpackbits(z["cloud_correct"], axis=0, count=n).astype(bool),
                    options=tuple((str(c), str(q)) for c, q in meta["options"]),
                    source=str(meta.get("source", "")),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise InvalidArgument(f"trace: cannot read {path}: {exc}") from exc


def entropy_from_confidence(
    conf: npt.NDArray[np.float64], n_classes: int = 10
) -> npt.NDArray[np.float64]:
    """Entropy of a distribution with top-1 ``conf`` and the rest spread evenly."""
    c = np.clip(conf, 1e-6, 1 - 1e-6)
    rest = (1 - c) / (n_classes - 1)
    return -(c * np.log(c)) - (1 - c) * np.log(rest)


def synthetic_profile() -> BundleProfile:
    """A profile shaped like the reference backbone (three exits, cuts after exits 1 and 2)."""
    return BundleProfile(
        model="synthetic-branchy",
        exits=(
            ExitCost("exit1", 0.13, threshold=0.93),
            ExitCost("exit2", 0.12, threshold=0.88),
            ExitCost("final", 0.09, threshold=0.0),
        ),
        cuts=(
            CutPointCost(INPUT_CUT, -1, 0.34, {"raw": CodecCost(784)}),
            CutPointCost(
                "cut1",
                0,
                0.22,
                {
                    "int8": CodecCost(6272, 0.02, 0.02),
                    "q4|ans": CodecCost(1400, 0.08, 0.1, accuracy_drop=0.2),
                    "q2|ans": CodecCost(520, 0.08, 0.1, accuracy_drop=0.9),
                },
            ),
            CutPointCost(
                "cut2",
                1,
                0.1,
                {"int8": CodecCost(3136, 0.01, 0.01), "q4|ans": CodecCost(700, 0.05, 0.05, 0.2)},
            ),
        ),
    )


def synthetic_trace(n: int = 4000, seed: int = 0, profile: BundleProfile | None = None) -> Trace:
    """Calibrated synthetic outcomes: a latent difficulty per image drives every exit's
    confidence; one uniform draw per image makes correctness nested across exits and calibrated
    (P(correct | confidence) = confidence). Accuracies ≈ 90.7 / 92 / 93 %."""
    profile = profile or synthetic_profile()
    rng = np.random.default_rng(seed)
    k = profile.n_exits
    z = rng.standard_normal(n)
    u = rng.random(n)
    base = np.linspace(3.45, 3.9, k)
    conf = np.empty((n, k))
    for j in range(k):
        logit = base[j] - 2.0 * z + 0.6 * rng.standard_normal(n)
        conf[:, j] = 0.1 + 0.9 / (1.0 + np.exp(-logit))
    correct = u[:, None] < conf
    options = tuple((c.name, q) for c in profile.cuts for q in c.codecs)
    cloud = np.empty((n, len(options)), dtype=bool)
    for j, (cut, codec) in enumerate(options):
        drop = profile.cut(cut).codecs[codec].accuracy_drop / 100.0
        cloud[:, j] = u < conf[:, -1] - drop * (1.0 + rng.standard_normal(n) * 0.5)
    return Trace(
        profile,
        conf.astype(np.float32),
        entropy_from_confidence(conf).astype(np.float32),
        correct,
        cloud,
        options,
        "synthetic",
    )


__all__ = ["Trace", "entropy_from_confidence", "synthetic_profile", "synthetic_trace"]
