"""Per-cut-point latency and activation size of a bundle or a bare ONNX model (CPU)."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from common.bundle._bundle import Bundle, load_bundle
from common.bundle._manifest import MANIFEST_NAME, CutPointSpec
from common.bundle._multicut import frontier_cuts
from common.bundle._shapes import run_session
from common.bundle._split import (
    CutCandidate,
    attach_shapes,
    candidate_cuts,
    find_cut,
    load_model,
    random_inputs,
    split_model,
)

SCHEMA = "aiml021.profile/1"


def _stats(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {
        "median": float(np.median(a)),
        "p10": float(np.percentile(a, 10)),
        "p90": float(np.percentile(a, 90)),
    }


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> dict[str, float]:
    """Median/p10/p90 milliseconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _stats(samples)


def _session(source: str | bytes, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def machine_info() -> dict[str, Any]:
    """Platform, CPU count and library versions for result files."""
    import onnxruntime as ort

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }


def _codec_bytes(bundle: Bundle, cut: CutPointSpec, sample: np.ndarray) -> dict[str, int]:
    """Encoded bytes of one sample with the cut's default codec (when common.codecs exists)."""
    if cut.codec is None:
        return {}
    try:
        from common import codecs
    except ImportError:  # the codecs extra is optional; float32 bytes stand alone
        return {}
    model = None
    if cut.codec.entropy_model:
        model = codecs.EntropyModel.load(bundle.file_path(cut.codec.entropy_model))
    frame = codecs.encode(sample[:1], cut.codec.default, entropy_model=model)
    return {cut.codec.default: len(frame)}


def profile(
    target: str | Path,
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 10,
    threads: int = 1,
    progress: bool = True,
    feeds: Mapping[str, np.ndarray] | None = None,
    raw: Path | None = None,
    multi: bool = False,
    cuts: list[str] | None = None,
) -> dict[str, Any]:
    """Profile every cut point of a bundle, or every candidate cut of a bare ONNX model.

    ``feeds`` (a real input for a bare model) give every cut its concrete shape and bytes;
    ``raw`` is an ``.npy`` of raw images for a bundle (preprocessed by its manifest); ``multi``
    adds the multi-tensor cuts of a bare model; ``cuts`` profiles only these cuts of a bare model
    (tensor names, comma-joined for a set). Returns the ``aiml021.profile/1`` JSON document
    described in docs/bundles.md.
    """
    from tqdm import tqdm

    path = Path(target)
    is_bundle = path.is_dir() or path.name == MANIFEST_NAME
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "model": str(path),
        "kind": "bundle" if is_bundle else "onnx",
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "threads": threads,
        "machine": machine_info(),
    }
    if is_bundle:
        bundle = load_bundle(path)
        images = None if raw is None else np.load(raw, allow_pickle=False)
        doc.update(_profile_bundle(bundle, batch, repeats, warmup, threads, progress, tqdm, images))
    else:
        model = load_model(path)
        feeds = dict(feeds) if feeds is not None else random_inputs(model, batch=batch)
        doc["input_shapes"] = {k: list(v.shape) for k, v in feeds.items()}
        if cuts:
            cands = attach_shapes(model, [find_cut(model, c) for c in cuts], feeds)
        else:
            cands = candidate_cuts(model, feeds)
            if multi:
                cands += frontier_cuts(model, feeds)
        doc.update(_profile_onnx(model, cands, feeds, repeats, warmup, threads, progress, tqdm))
    return doc


def _profile_bundle(
    bundle: Bundle,
    batch: int,
    repeats: int,
    warmup: int,
    threads: int,
    progress: bool,
    tqdm: Any,
    images: np.ndarray | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    shape = bundle.manifest.input.shape
    c, h, w = (d or 1 for d in shape[1:4])
    nhw = bundle.manifest.input.preprocessing.source_layout == "NHW"
    if images is not None:
        raw = images[:batch]
    else:
        raw = rng.integers(0, 256, (batch, h, w) if nhw else (batch, h, w, c), dtype=np.uint8)
    x = bundle.preprocess(raw)
    input_name = bundle.manifest.input.name
    sessions = {s.name: bundle.session(s.name, threads) for s in bundle.manifest.segments}

    def chain(names: list[str]) -> dict[str, np.ndarray]:
        values = {input_name: x}
        for n in names:
            spec = bundle.manifest.segment(n)
            outs = sessions[n].run(
                [t.name for t in spec.outputs], {t.name: values[t.name] for t in spec.inputs}
            )
            values.update(zip([t.name for t in spec.outputs], outs, strict=True))
        return values

    full = bundle.manifest.full
    result: dict[str, Any] = {
        "input_bytes": {"raw_uint8": int(raw[0].nbytes), "float32": int(x[0].nbytes)},
        "full_ms": time_call(lambda: chain([full]), repeats, warmup),
        "cut_points": [],
    }
    for cut in tqdm(bundle.cut_points, desc="profile", disable=not progress):
        act = chain(cut.head)[cut.name]
        tail_sess = sessions[cut.tail]
        result["cut_points"].append(
            {
                "name": cut.name,
                "shape": cut.shape,
                "float32_bytes": cut.float32_bytes,
                "tensors": {cut.name: list(act.shape)},
                "codec_bytes": _codec_bytes(bundle, cut, act),
                "head_ms": time_call(lambda c=cut: chain(c.head), repeats, warmup),  # type: ignore[misc]
                "tail_ms": time_call(
                    lambda c=cut, a=act, s=tail_sess: s.run(None, {c.name: a}),  # type: ignore[misc]
                    repeats,
                    warmup,
                ),
            }
        )
    return result


def _profile_onnx(
    model: onnx.ModelProto,
    cands: list[CutCandidate],
    feeds: dict[str, np.ndarray],
    repeats: int,
    warmup: int,
    threads: int,
    progress: bool,
    tqdm: Any,
) -> dict[str, Any]:
    full = _session(model.SerializeToString(), threads)
    result: dict[str, Any] = {
        "input_bytes": {"float32": int(sum(v[0].nbytes for v in feeds.values()))},
        "full_ms": time_call(lambda: full.run(None, feeds), repeats, warmup),
        "cut_points": [],
    }
    for cand in tqdm(cands, desc="profile", disable=not progress):
        split = split_model(model, cand, feeds)
        head = _session(split.head.SerializeToString(), threads)
        tail = _session(split.tail.SerializeToString(), threads)
        names = list(cand.tensors)
        acts = dict(zip(names, run_session(head, names, feeds, f"cut {cand.name!r}"), strict=True))
        result["cut_points"].append(
            {
                "name": cand.name,
                "shape": cand.shape,
                "float32_bytes": cand.float32_bytes,
                "tensors": {t: list(a.shape) for t, a in acts.items()},
                "codec_bytes": {},
                "head_ms": time_call(lambda h=head: h.run(None, feeds), repeats, warmup),  # type: ignore[misc]
                "tail_ms": time_call(lambda t=tail, a=acts: t.run(None, a), repeats, warmup),  # type: ignore[misc]
            }
        )
    return result


def format_table(doc: dict[str, Any]) -> str:
    """Terminal table of a profile document."""
    lines = [
        f"{doc['model']} ({doc['kind']}), batch {doc['batch']}, {doc['threads']} thread(s), "
        f"median of {doc['repeats']} after {doc['warmup']} warm-up; full "
        f"{doc['full_ms']['median']:.3f} ms",
        f"{'cut point':<48} {'shape':<24} {'f32 bytes':>10} {'head ms':>9} {'tail ms':>9}",
    ]
    for c in doc["cut_points"]:
        shape = " + ".join(
            "x".join(map(str, s)) for s in c.get("tensors", {}).values()
        ) or "x".join("N" if d is None else str(d) for d in c["shape"])
        name = c["name"] if len(c["name"]) <= 48 else "..." + c["name"][-45:]
        lines.append(
            f"{name:<48} {shape:<24} {c['float32_bytes'] or 0:>10} "
            f"{c['head_ms']['median']:>9.3f} {c['tail_ms']['median']:>9.3f}"
        )
    return "\n".join(lines)
