"""Codec benchmark: throughput, coded size vs entropy, and batch-1 latency at the first cut point.

    .venv/bin/python -m benchmarks.codecs.bench [--bundle models/fmnist_branchy] [--cut-point cut1]

Uses the bundle's real activations (validation images through the head; entropy models fitted
on training images) when the bundle exists, else synthetic ReLU-like activations, and says
which in the output. Pinned to one CPU core. Every number is the median over repeats, with the
spread (min..max of the per-repeat medians); raw (no compression) is the baseline in the same run.
Writes benchmarks/results/codecs.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.codecs import (
    CodecSpec,
    EntropyModel,
    decode,
    empirical_entropy_bits,
    encode,
    fit_entropy_model,
    parse_spec,
    peek_header,
)
from common.codecs._pipeline import prepare
from common.codecs.cli import _activations, machine_info

RESULTS = Path(__file__).resolve().parents[1] / "results"


def synthetic(n: int, seed: int) -> np.ndarray:
    """ReLU-like activations shaped like the reference first cut (32x14x14)."""
    rng = np.random.default_rng(seed)
    shape = (n, 32, 14, 14)
    pre = rng.standard_normal(shape).astype(np.float32) - 0.2
    scale = rng.uniform(0.3, 2.0, size=(1, 32, 1, 1)).astype(np.float32)
    return np.maximum(pre, 0) * rng.gamma(1.2, 1.0, size=shape).astype(np.float32) * scale


def load_data(
    bundle_dir: str, cut: str, n: int, n_fit: int
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """(activations, fitting activations, description, the cut's default codec if any)."""
    if (Path(bundle_dir) / "manifest.json").is_file():
        from common.bundle import load_bundle
        from common.data import load_fashion_mnist

        bundle = load_bundle(bundle_dir)
        val, _ = load_fashion_mnist("validation")
        train, _ = load_fashion_mnist("train")
        pick = np.random.default_rng(0).permutation(len(train))[:n_fit]
        acts = _activations(bundle, cut, val[:n])
        fit = _activations(bundle, cut, train[pick])
        codec = bundle.cut_point(cut).codec
        default = [codec.default] if codec is not None else []
        source = f"real: {bundle.name} {cut}, validation images (models fitted on train)"
        return acts, fit, source, default
    source = "SYNTHETIC ReLU-like activations (no bundle found)"
    return synthetic(n, 1), synthetic(n_fit, 2), source, []


def _clip_hi(fit: np.ndarray, pct: float) -> str:
    return f"{float(np.percentile(fit, pct)):.4g}"


def codec_list(fit: np.ndarray, extra: list[str]) -> list[str]:
    c999, c99 = _clip_hi(fit, 99.9), _clip_hi(fit, 99.0)
    specs = [
        "raw",
        "raw|zstd",
        "f16",
        "int8",
        "int8:per_channel",
        "q4",
        "q4|sparse:bitmap",
        "q4|sparse:rle",
        "q4|zstd",
        "f16|sparse:bitmap|zstd",
        "int8|ans",
        f"clip:0,{c999}|q4|ans",
        f"clip:0,{c999}|q4|range",
        f"clip:0,{c99}|q3|ans",
        f"clip:0,{c99}|q2|ans",
        f"clip:0,{c99}|q2|sparse:bitmap|ans",
        "clip:p99.9|q4|ans",
    ]
    return list(dict.fromkeys(str(parse_spec(s)) for s in [*specs, *extra]))


def _timed(fn: Any, reps: int) -> np.ndarray:
    out = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def throughput(
    spec: CodecSpec, batch: np.ndarray, model: EntropyModel | None, repeats: int, reps: int
) -> dict[str, Any]:
    frame = encode(batch, spec, entropy_model=model)
    enc, dec = [], []
    for _ in range(repeats):
        enc.append(np.median(_timed(lambda: encode(batch, spec, entropy_model=model), reps)))
        dec.append(np.median(_timed(lambda: decode(frame, entropy_models=model), reps)))
    mb = batch.astype(np.float32).nbytes / 1e6
    return {
        "encode_mb_s": mb / float(np.median(enc)),
        "encode_mb_s_spread": [mb / max(enc), mb / min(enc)],
        "decode_mb_s": mb / float(np.median(dec)),
        "decode_mb_s_spread": [mb / max(dec), mb / min(dec)],
    }


def latency(
    spec: CodecSpec, sample: np.ndarray, model: EntropyModel | None, repeats: int, reps: int
) -> dict[str, Any]:
    def roundtrip() -> None:
        decode(encode(sample, spec, entropy_model=model), entropy_models=model)

    for _ in range(50):
        roundtrip()
    medians, allt = [], []
    for _ in range(repeats):
        t = _timed(roundtrip, reps) * 1e3
        medians.append(float(np.median(t)))
        allt.append(t)
    t_all = np.concatenate(allt)
    return {
        "median_ms": float(np.median(medians)),
        "median_spread_ms": [min(medians), max(medians)],
        "p10_ms": float(np.percentile(t_all, 10)),
        "p90_ms": float(np.percentile(t_all, 90)),
        "p99_ms": float(np.percentile(t_all, 99)),
    }


def sizes(spec: CodecSpec, acts: np.ndarray, model: EntropyModel | None) -> dict[str, Any]:
    """Coded sizes at batch 1 (every sample alone) against the entropy of the symbols."""
    elements = acts[0].size
    frame_total = payload_total = 0
    emp = cross = 0.0
    for i in range(acts.shape[0]):
        sample = acts[i : i + 1]
        frame = encode(sample, spec, entropy_model=model)
        frame_total += len(frame)
        payload_total += peek_header(frame).coded_bytes
        if spec.bits:
            symbols, _, _ = prepare(sample, spec)
            emp += empirical_entropy_bits(symbols, 1 << spec.bits)
            if model is not None:
                shaped = symbols if model.contexts == 1 else symbols.reshape(sample.shape)
                cross += model.cross_entropy_bits(shaped)
    n = acts.shape[0]
    out: dict[str, Any] = {
        "frame_bytes_mean": frame_total / n,
        "bits_per_element": 8 * frame_total / (n * elements),
        "payload_bits_per_element": 8 * payload_total / (n * elements),
        "ratio_vs_float32": 4 * elements * n / frame_total,
    }
    if spec.bits:
        out["empirical_entropy_bits_per_element"] = emp / (n * elements)
    if model is not None and spec.needs_entropy_model and spec.sparse is None:
        out["model_cross_entropy_bits_per_element"] = cross / (n * elements)
        out["payload_over_model_entropy_pct"] = (
            100 * (8 * payload_total / cross - 1) if cross else None
        )
    return out


def bulk_entropy_check(spec: CodecSpec, acts: np.ndarray, model: EntropyModel) -> dict[str, Any]:
    """One large tensor (all samples): ANS/range size vs ideal size under the model used."""
    frame = encode(acts, spec, entropy_model=model)
    symbols, _, _ = prepare(acts, spec)
    cross = model.cross_entropy_bits(
        symbols if model.contexts == 1 else symbols.reshape(acts.shape)
    )
    payload = peek_header(frame).coded_bytes
    return {
        "elements": int(acts.size),
        "payload_bytes": payload,
        "model_cross_entropy_bytes": cross / 8,
        "empirical_entropy_bytes": empirical_entropy_bits(symbols, 1 << spec.bits) / 8,
        "payload_over_model_entropy_pct": 100 * (8 * payload / cross - 1),
    }


def _runs(specs: list[str]) -> list[tuple[str, str]]:
    """(spec, entropy model context): richest contexts possible, simpler ones for comparison."""
    runs = []
    for text in specs:
        spec = parse_spec(text)
        if not spec.needs_entropy_model:
            runs.append((text, ""))
        elif spec.sparse is not None:
            runs.append((text, "flat"))
        else:
            runs += [(text, "spatial")] if spec.bits <= 3 else []
            runs += [(text, "channel"), (text, "flat")]
    runs.append((specs[-1], "embedded"))
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bundle", default="models/fmnist_branchy")
    ap.add_argument("--cut-point", default="cut1", help="cut point name from the manifest")
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--fit-samples", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--spec", action="append", default=[], help="extra spec to include")
    ap.add_argument("--out", type=Path, default=RESULTS / "codecs.json")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    acts, fit, source, default = load_data(
        args.bundle, args.cut_point, args.samples, args.fit_samples
    )
    print(f"data: {source}; {acts.shape[0]} samples of {acts.shape[1:]}; one core")
    rows: list[dict[str, Any]] = []
    batch64 = acts[:64]
    for text, kind in _runs(codec_list(fit, [*args.spec, *default])):
        spec = parse_spec(text)
        model = None
        if kind not in ("", "embedded"):
            samples = [fit[i : i + 1] for i in range(len(fit))]
            model = fit_entropy_model(spec, samples, context=kind)
        row: dict[str, Any] = {"spec": text, "entropy_model": kind}
        row.update(sizes(spec, acts, model))
        row["batch1"] = throughput(spec, acts[:1], model, args.repeats, 200)
        row["batch64"] = throughput(spec, batch64, model, args.repeats, 5)
        row["latency_batch1"] = latency(spec, acts[0:1], model, args.repeats, 400)
        if model is not None and spec.sparse is None:
            row["bulk_entropy"] = bulk_entropy_check(spec, acts, model)
        rows.append(row)
        print(
            f"{text:36s} {kind:11s} {row['bits_per_element']:7.3f} b/el {row['ratio_vs_float32']:6.1f}x "
            f"enc {row['batch64']['encode_mb_s']:7.1f} dec {row['batch64']['decode_mb_s']:7.1f} MB/s "
            f"rt {row['latency_batch1']['median_ms']:.3f} ms"
        )
    doc = {"benchmark": "codecs", "data": source, "cut": args.cut_point, "samples": int(acts.shape[0]),
           "shape": list(acts.shape[1:]), "one_core": True, "repeats": args.repeats,
           "machine": machine_info(), "baseline": "raw", "codecs": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    _table(rows)
    md = args.out.with_suffix(".md")
    md.write_text(_markdown(doc))
    print(f"wrote {args.out} and {md}")
    return 0


def _markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Codec benchmark (`python -m benchmarks.codecs.bench`)",
        "",
        f"Data: {doc['data']}; {doc['samples']} samples of {doc['shape']}. One core of "
        f"{m['cpu_count']} ({m['processor']}, {m['platform']}), numpy {m['numpy']}, "
        f"constriction {m['constriction']}, zstandard {m['zstandard']}. Medians over "
        f"{doc['repeats']} repeats; baseline `raw` in the same run.",
        "",
        "| spec | entropy model | bits/elem | ratio | H_emp bits/elem | payload vs ideal (bulk) | "
        "enc MB/s b1 | dec MB/s b1 | enc MB/s b64 | dec MB/s b64 | enc+dec ms b1 (p10–p90) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["codecs"]:
        h = r.get("empirical_entropy_bits_per_element")
        bulk = r.get("bulk_entropy", {}).get("payload_over_model_entropy_pct")
        lat = r["latency_batch1"]
        lines.append(
            f"| `{r['spec']}` | {r['entropy_model'] or '-'} | {r['bits_per_element']:.3f} | "
            f"{r['ratio_vs_float32']:.1f} | {'' if h is None else f'{h:.3f}'} | "
            f"{'' if bulk is None else f'{bulk:+.3f}%'} | {r['batch1']['encode_mb_s']:.0f} | "
            f"{r['batch1']['decode_mb_s']:.0f} | {r['batch64']['encode_mb_s']:.0f} | "
            f"{r['batch64']['decode_mb_s']:.0f} | {lat['median_ms']:.3f} "
            f"({lat['p10_ms']:.3f}–{lat['p90_ms']:.3f}) |"
        )
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'spec':36s} {'model':11s} {'bits/el':>7s} {'ratio':>6s} {'H_emp':>6s} {'vs H_model':>10s} "
        f"{'enc MB/s b1':>11s} {'dec MB/s b1':>11s} {'enc b64':>8s} {'dec b64':>8s} {'rt ms (p10-p90)':>18s}"
    )
    for r in rows:
        h = r.get("empirical_entropy_bits_per_element")
        bulk = r.get("bulk_entropy", {}).get("payload_over_model_entropy_pct")
        lat = r["latency_batch1"]
        print(
            f"{r['spec']:36s} {r['entropy_model']:11s} {r['bits_per_element']:7.3f} {r['ratio_vs_float32']:6.1f} "
            f"{'' if h is None else f'{h:.3f}':>6s} {'' if bulk is None else f'{bulk:+.2f}%':>10s} "
            f"{r['batch1']['encode_mb_s']:11.1f} {r['batch1']['decode_mb_s']:11.1f} "
            f"{r['batch64']['encode_mb_s']:8.1f} {r['batch64']['decode_mb_s']:8.1f} "
            f"{lat['median_ms']:6.3f} ({lat['p10_ms']:.3f}-{lat['p90_ms']:.3f})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
