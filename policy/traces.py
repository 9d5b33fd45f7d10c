"""Build a replayable :class:`~policy.Trace` from a real model bundle over a data split: per
image, the calibrated confidence, entropy and correctness at every exit, the correctness of the
cloud answer for the raw input (full model) and for each cut point and codec (features encoded,
decoded and run through the tail), plus measured sizes and compute times.

Runs onnxruntime on the CPU; a full Fashion-MNIST test set takes a few minutes. Usage:
``aiml021 policy traces models/fmnist_branchy -o benchmarks/results/policy_trace.npz``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.confidence import softmax
from common.errors import InvalidArgument
from policy._manifest import profile_from_manifest
from policy._profile import INPUT_CUT, BundleProfile, CodecCost, CutPointCost
from policy._trace import Trace

log = logging.getLogger(__name__)

DEFAULT_CODECS: tuple[str, ...] = ("int8", "q4|ans", "q2|ans")
"""Codecs traced at every cut point (plus the cut's manifest default)."""


def _median_ms(fn: Any, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


class _Runner:
    """Runs the bundle's segments by tensor name."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.sessions: dict[str, Any] = {}

    def session(self, name: str) -> Any:
        if name not in self.sessions:
            self.sessions[name] = self.bundle.session(name, threads=1)
        return self.sessions[name]

    def run(self, name: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.session(name)
        feed = {i.name: tensors[i.name] for i in sess.get_inputs()}
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feed), strict=True))


def build_trace(
    bundle_path: str | Path,
    images: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int64],
    *,
    codecs: Mapping[str, Sequence[str]] | None = None,
    fit_images: npt.NDArray[np.uint8] | None = None,
    timing_samples: int = 100,
    batch: int = 250,
) -> Trace:
    """Trace ``images`` through the bundle at ``bundle_path``.

    ``codecs`` maps cut point -> codec specs (default :data:`DEFAULT_CODECS` plus the manifest
    default). Entropy-coded specs use a model fitted on ``fit_images`` (e.g. 500 validation
    images; default: the first 500 of ``images``). Per-image activations are coded one image at
    a time, as a device would send them.
    """
    from common.bundle import load_bundle
    from common.codecs import decode, encode, fit_entropy_model

    bundle = load_bundle(bundle_path)
    runner = _Runner(bundle)
    m = bundle.manifest
    exits = bundle.exits
    cuts = bundle.cut_points
    chain = list(m.edge_chain)
    for e in exits:
        if e.segment not in chain:
            raise InvalidArgument(
                f"{bundle_path}: exit {e.name} runs on {e.segment}, not on the edge chain"
            )
    specs: dict[str, list[str]] = {}
    for c in cuts:
        wanted = list(codecs.get(c.name, DEFAULT_CODECS) if codecs else DEFAULT_CODECS)
        if c.codec is not None and c.codec.default not in wanted:
            wanted.append(c.codec.default)
        specs[c.name] = wanted

    def forward(x: np.ndarray) -> dict[str, np.ndarray]:
        tensors = {m.input.name: x}
        for seg in chain:
            tensors.update(runner.run(seg, tensors))
        return tensors

    fit_x = bundle.preprocess(fit_images if fit_images is not None else images[:500])
    fit_acts = forward(fit_x)
    models: dict[tuple[str, str], Any] = {}
    for c in cuts:
        for spec in specs[c.name]:
            if "ans" in spec or "range" in spec:
                arrays = (fit_acts[c.name][i : i + 1] for i in range(fit_x.shape[0]))
                models[(c.name, spec)] = fit_entropy_model(spec, arrays, cut=c.name)

    n, k = images.shape[0], len(exits)
    options = [(INPUT_CUT, "raw")] + [(c.name, s) for c in cuts for s in specs[c.name]]
    conf = np.empty((n, k), np.float32)
    ent = np.empty((n, k), np.float32)
    correct = np.empty((n, k), bool)
    cloud = np.empty((n, len(options)), bool)
    n_bytes = {o: 0.0 for o in options}
    enc_ms: dict[tuple[str, str], list[float]] = {o: [] for o in options}
    dec_ms: dict[tuple[str, str], list[float]] = {o: [] for o in options}
    for start in range(0, n, batch):
        sl = slice(start, min(start + batch, n))
        x = bundle.preprocess(images[sl])
        y = labels[sl]
        acts = forward(x)
        for j, e in enumerate(exits):
            p = softmax(acts[e.logits], e.temperature)
            conf[sl, j] = p.max(axis=1)
            ent[sl, j] = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
            correct[sl, j] = p.argmax(axis=1) == y
        full = runner.run(m.full, {m.input.name: x})
        cloud[sl, 0] = next(iter(full.values())).argmax(axis=1) == y
        n_bytes[options[0]] += float(np.prod(images.shape[1:])) * (sl.stop - sl.start)
        for col, (cut, spec) in enumerate(options[1:], start=1):
            act = acts[cut]
            model = models.get((cut, spec))
            decoded = np.empty_like(act)
            for i in range(act.shape[0]):
                t0 = time.perf_counter()
                frame = encode(act[i : i + 1], spec, entropy_model=model)
                t1 = time.perf_counter()
                decoded[i : i + 1] = decode(frame, entropy_models=model)
                t2 = time.perf_counter()
                n_bytes[(cut, spec)] += len(frame)
                if len(enc_ms[(cut, spec)]) < timing_samples:
                    enc_ms[(cut, spec)].append((t1 - t0) * 1e3)
                    dec_ms[(cut, spec)].append((t2 - t1) * 1e3)
            tail = runner.run(bundle.cut_point(cut).tail, {cut: decoded})
            cloud[sl, col] = next(iter(tail.values())).argmax(axis=1) == y
        log.info("traced %d/%d images", sl.stop, n)

    profile = _profile(
        bundle, runner, images, timing_samples, options, n_bytes, enc_ms, dec_ms, cloud, n
    )
    return Trace(profile, conf, ent, correct, cloud, tuple(options), f"{m.name}:{m.version}")


def _profile(
    bundle: Any,
    runner: _Runner,
    images: np.ndarray,
    samples: int,
    options: list[tuple[str, str]],
    n_bytes: dict[tuple[str, str], float],
    enc_ms: dict[tuple[str, str], list[float]],
    dec_ms: dict[tuple[str, str], list[float]],
    cloud: np.ndarray,
    n: int,
) -> BundleProfile:
    """Batch-1 compute times (median over ``samples`` images) and per-option sizes."""
    m = bundle.manifest
    x = bundle.preprocess(images[:1])
    tensors = {m.input.name: x}
    seg_ms: dict[str, float] = {}
    for seg in m.edge_chain:
        seg_ms[seg] = _median_ms(lambda s=seg: runner.run(s, tensors), samples)
        tensors.update(runner.run(seg, tensors))
    full_ms = _median_ms(lambda: runner.run(m.full, {m.input.name: x}), samples)
    acc_full = float(cloud[:, 0].mean())
    tail_ms: dict[str, float] = {}
    codecs: dict[str, dict[str, CodecCost]] = {}
    for c in bundle.cut_points:
        tail_ms[c.name] = _median_ms(
            lambda c=c: runner.run(c.tail, {c.name: tensors[c.name]}), samples
        )
        codecs[c.name] = {
            spec: CodecCost(
                bytes=round(n_bytes[(cut, spec)] / n),
                encode_ms=float(np.median(enc_ms[(cut, spec)])),
                decode_ms=float(np.median(dec_ms[(cut, spec)])),
                accuracy_drop=max(0.0, 100.0 * (acc_full - float(cloud[:, j].mean()))),
            )
            for j, (cut, spec) in enumerate(options)
            if cut == c.name
        }
    raw_input = CutPointCost(
        INPUT_CUT, -1, full_ms, {"raw": CodecCost(round(n_bytes[options[0]] / n))}
    )
    return profile_from_manifest(
        m,
        segment_ms=seg_ms,
        tail_ms=tail_ms,
        codecs=codecs,
        extra_cuts=(raw_input,),
        model=f"{m.name}:{m.version}",
    )


__all__ = ["DEFAULT_CODECS", "build_trace"]
