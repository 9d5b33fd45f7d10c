"""Rate–distortion sweep: activations -> codec -> tail over a grid of codec specs.

The core works on arrays and a tail callable so that it is tested without a bundle; ``cli.py``
feeds it a bundle's validation split. Every sample is coded alone (batch 1, as an edge device
sends it) and sizes count the whole frame, header included.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from common.codecs._entropy import EntropyModel, empirical_entropy_bits
from common.codecs._pipeline import decode, encode, fit_entropy_model, peek_header, prepare
from common.codecs._spec import CodecSpec, parse_spec

log = logging.getLogger(__name__)
Tail = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class SweepPoint:
    """One codec setting's measured rate, distortion and speed."""

    spec: str
    bits_per_element: float  # whole frames, header included
    payload_bits_per_element: float  # coded payload only
    ratio: float  # float32 bytes / frame bytes
    accuracy: float  # percent
    drop: float  # points below the uncompressed accuracy
    encode_ms: float  # median per sample
    decode_ms: float  # median per sample
    entropy_model: str  # offline model context ("flat", "channel", "spatial"), "" when none
    entropy_bits_per_element: float | None = None  # ideal size under the model used
    empirical_entropy_bits_per_element: float | None = None  # n*H(symbols) per sample, averaged


@dataclasses.dataclass
class SweepResult:
    baseline_accuracy: float
    samples: int
    elements: int
    points: list[SweepPoint]
    models: dict[str, EntropyModel]

    def best_within(self, budget: float) -> SweepPoint | None:
        """Smallest frames whose accuracy drop is at most ``budget`` points."""
        ok = [p for p in self.points if p.drop <= budget + 1e-9]
        return min(ok, key=lambda p: p.bits_per_element) if ok else None

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline_accuracy": self.baseline_accuracy,
            "samples": self.samples,
            "elements_per_sample": self.elements,
            "points": [dataclasses.asdict(p) for p in self.points],
        }


def default_grid(calibration: np.ndarray, *, quick: bool = False) -> list[str]:
    """Specs worth trying for these activations: baselines, then fixed-clip qN|ans settings.

    Fixed clip ranges are multiples of the calibration activations' 99th percentile (of |x|),
    so the symbol distribution is the same for every sample and an offline entropy model fits
    it; companding exponents below 1 spend the few levels of 2-3 bit codes near zero, where
    most ReLU activations lie.
    """
    flat = calibration.reshape(-1).astype(np.float64)
    nonneg = float(flat.min()) >= 0
    p99 = max(float(np.percentile(np.abs(flat), 99.0)), 1e-6)
    multiples = (1.0, 2.0) if quick else (0.65, 1.0, 1.3, 1.65, 2.0, 2.3)
    gammas = (0.7, 1.0) if quick else (0.5, 0.7, 0.85, 1.0)
    grid = ["f16", "int8", "int8:per_channel", "q4|sparse:bitmap", "q4|zstd"]
    grid += ["clip:p99.9|q4|sparse:bitmap|ans", "clip:mse|q3|ans", "clip:p99.9|q4|ans"]
    for m in multiples:
        hi = _fmt(m * p99)
        lo = "0" if nonneg else _fmt(-m * p99)
        for bits in (2, 3):
            for g in gammas:
                pow_arg = "" if g == 1.0 else f":pow={g}"
                grid.append(f"clip:{lo},{hi}|q{bits}{pow_arg}|ans")
        if not quick and m in (1.0, 2.0):
            grid += [f"clip:{lo},{hi}|q4|ans", f"clip:{lo},{hi}|q4:pow=0.7|ans"]
    return list(dict.fromkeys(str(parse_spec(s)) for s in grid))


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels) * 100.0)


def evaluate_spec(
    spec: CodecSpec,
    activations: np.ndarray,
    labels: np.ndarray,
    tail: Tail,
    baseline: float,
    model: EntropyModel | None,
) -> SweepPoint:
    """Code every sample alone, decode, run the tail on the batch, and measure."""
    n = activations.shape[0]
    elements = int(np.prod(activations.shape[1:]))
    decoded = np.empty_like(activations)
    frame_bytes = payload_bytes = 0
    enc_times, dec_times = np.empty(n), np.empty(n)
    ideal = empirical = 0.0
    for i in range(n):
        sample = activations[i : i + 1]
        t0 = time.perf_counter()
        frame = encode(sample, spec, entropy_model=model)
        t1 = time.perf_counter()
        decoded[i : i + 1] = decode(frame, entropy_models=model)
        t2 = time.perf_counter()
        enc_times[i], dec_times[i] = t1 - t0, t2 - t1
        frame_bytes += len(frame)
        payload_bytes += peek_header(frame).coded_bytes
        if spec.bits:
            symbols, _, _ = prepare(sample, spec)
            empirical += empirical_entropy_bits(symbols, 1 << spec.bits)
            if model is not None:
                shaped = symbols if model.contexts == 1 else symbols.reshape(sample.shape)
                ideal += model.cross_entropy_bits(shaped)
    acc = accuracy(tail(decoded), labels)
    return SweepPoint(
        spec=str(spec),
        bits_per_element=8.0 * frame_bytes / (n * elements),
        payload_bits_per_element=8.0 * payload_bytes / (n * elements),
        ratio=4.0 * n * elements / frame_bytes,
        accuracy=acc,
        drop=baseline - acc,
        encode_ms=float(np.median(enc_times) * 1e3),
        decode_ms=float(np.median(dec_times) * 1e3),
        entropy_model="" if model is None else model.context,
        entropy_bits_per_element=ideal / (n * elements) if model is not None else None,
        empirical_entropy_bits_per_element=empirical / (n * elements) if spec.bits else None,
    )


def run_sweep(
    activations: np.ndarray,
    labels: np.ndarray,
    tail: Tail,
    specs: Iterable[str | CodecSpec],
    *,
    fit_activations: np.ndarray | None = None,
    cut: str = "",
    progress: Callable[[str], None] | None = None,
    model_context: str = "auto",
) -> SweepResult:
    """Measure every spec; ans/range specs get an entropy model fitted on ``fit_activations``.

    Fit on data other than what is measured (e.g. training-split activations) so that the
    reported sizes are honest; without ``fit_activations`` the measured data is used.
    ``model_context`` "auto" picks spatial contexts (NCHW, <= 3 bits), else per channel, else
    flat when a sparse stage precedes; or name one ("flat", "channel", "spatial").
    """
    baseline = accuracy(tail(activations), labels)
    fit_on = activations if fit_activations is None else fit_activations
    points: list[SweepPoint] = []
    models: dict[str, EntropyModel] = {}
    for item in specs:
        spec = item if isinstance(item, CodecSpec) else parse_spec(item)
        model = None
        if spec.needs_entropy_model:
            context = model_context if model_context != "auto" else auto_context(spec, fit_on.ndim)
            model = fit_entropy_model(spec, _samples(fit_on), cut=cut, context=context)
            models[str(spec)] = model
        point = evaluate_spec(spec, activations, labels, tail, baseline, model)
        points.append(point)
        if progress is not None:
            progress(
                f"{point.spec:40s} {point.bits_per_element:7.3f} b/elem {point.ratio:7.1f}x "
                f"acc {point.accuracy:6.2f} drop {point.drop:+.2f}"
            )
    elements = int(np.prod(activations.shape[1:]))
    return SweepResult(baseline, int(activations.shape[0]), elements, points, models)


def auto_context(spec: CodecSpec, ndim: int) -> str:
    """The richest entropy-model context a spec and tensor rank allow."""
    if spec.sparse is not None or ndim < 2:
        return "flat"
    return "spatial" if ndim == 4 and spec.bits <= 3 else "channel"


def _samples(batch: np.ndarray) -> Sequence[np.ndarray]:
    return [batch[i : i + 1] for i in range(batch.shape[0])]


def plot(result: SweepResult, path: str, title: str, budget: float) -> None:
    """Accuracy vs bits/element (log x), budget line, chosen point marked; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    xs = [p.bits_per_element for p in result.points]
    ys = [p.accuracy for p in result.points]
    ax.scatter(xs, ys, s=18, color="tab:blue")
    front, best_acc = [], -1.0
    for p in sorted(result.points, key=lambda p: p.bits_per_element):
        if p.accuracy > best_acc:  # Pareto front: better accuracy than every smaller setting
            front.append(p)
            best_acc = p.accuracy
    ax.plot([p.bits_per_element for p in front], [p.accuracy for p in front], lw=0.8, alpha=0.6)
    for p in front:
        ax.annotate(p.spec, (p.bits_per_element, p.accuracy), fontsize=6, alpha=0.8, rotation=20)
    ax.axhline(result.baseline_accuracy, color="gray", ls="--", lw=1, label="float32")
    ax.axhline(
        result.baseline_accuracy - budget, color="tab:red", ls=":", lw=1, label=f"-{budget} pt"
    )
    best = result.best_within(budget)
    if best is not None:
        ax.scatter(
            [best.bits_per_element],
            [best.accuracy],
            s=80,
            facecolors="none",
            edgecolors="tab:red",
            label=f"chosen: {best.spec}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("bits per element (whole frame)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(max(0.0, result.baseline_accuracy - 10), result.baseline_accuracy + 1)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = [
    "SweepPoint",
    "SweepResult",
    "accuracy",
    "default_grid",
    "evaluate_spec",
    "plot",
    "run_sweep",
]
