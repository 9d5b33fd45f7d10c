"""Accuracy against ε with differential privacy on offloaded features.

    .venv/bin/python -m benchmarks.privacy.dp_accuracy [--images 1000] [--lines 200]

For each cut point the features of held-out inputs are clipped to the median L2 norm of a
calibration set (``privacy.clip_norm``), noised by ``common.privacy.GaussianMechanism`` at
(ε, δ=1e-5) per request, optionally coded with the cut's default codec, and answered by the tail:
Fashion-MNIST top-1 at cut1/cut2 of models/fmnist_branchy, and the share of OCR lines read exactly
(and 1 - CER) by PP-OCRv4's recogniser split at its backbone output and mid-backbone. ε = inf is
the model without noise (clipping only). Writes benchmarks/results/privacy_dp_accuracy.json and
.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.privacy._workloads import (
    OCR_CUTS,
    FmnistSplit,
    OcrSplit,
    cer,
    fmnist,
    machine,
    render_lines,
)
from common.codecs import decode, encode
from common.privacy import GaussianMechanism

RESULTS = Path(__file__).resolve().parents[1] / "results"
EPSILONS = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, math.inf]
DELTA = 1e-5


def _norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x.reshape(len(x), -1).astype(np.float64), axis=1)


def _release(feats: np.ndarray, eps: float, clip: float, seed: int) -> np.ndarray:
    if math.isinf(eps):
        return GaussianMechanism(1.0, DELTA, clip).clip(feats)
    return GaussianMechanism(eps, DELTA, clip).apply(feats, np.random.default_rng(seed))


def _coded(feats: np.ndarray, codec: str) -> np.ndarray:
    return np.stack([np.asarray(decode(encode(f[None], codec)))[0] for f in feats])


def fmnist_curve(n: int) -> list[dict[str, Any]]:
    test_x, test_y = fmnist("test", n, seed=1)
    cal_x, _ = fmnist("validation", 1000, seed=2)
    rows = []
    for cut in ("cut1", "cut2"):
        split = FmnistSplit(cut)
        clip = float(np.median(_norms(split.features(cal_x))))
        feats = split.features(test_x)
        for eps in EPSILONS:
            released = _release(feats, eps, clip, seed=3)
            acc = float((split.logits(released).argmax(1) == test_y).mean())
            coded = _coded(released, split.codec)
            acc_coded = float((split.logits(coded).argmax(1) == test_y).mean())
            mech = GaussianMechanism(1.0 if math.isinf(eps) else eps, DELTA, clip)
            rows.append({
                "workload": "fmnist", "cut": cut, "epsilon": eps, "delta": DELTA,
                "clip_norm": clip, "sigma": 0.0 if math.isinf(eps) else mech.sigma,
                "dims": int(np.prod(feats.shape[1:])), "n": n,
                "top1": acc, "top1_codec": acc_coded, "codec": split.codec,
            })  # fmt: skip
            print(f"fmnist {cut} ε={eps:>7} top1={acc:.3f} with codec={acc_coded:.3f}")
    return rows


def ocr_curve(n: int) -> list[dict[str, Any]]:
    lines, texts = render_lines(n, seed=11)
    cal, _ = render_lines(200, seed=12)
    rows = []
    for cut in OCR_CUTS:
        split = OcrSplit(cut)
        clip = float(np.median(_norms(split.features(cal))))
        feats = split.features(lines)
        for eps in EPSILONS:
            read = split.read_features(_release(feats, eps, clip, seed=13))
            exact = float(np.mean([r == t for r, t in zip(read, texts, strict=True)]))
            char = 1.0 - float(
                np.mean([min(1.0, cer(r, t)) for r, t in zip(read, texts, strict=True)])
            )
            mech = GaussianMechanism(1.0 if math.isinf(eps) else eps, DELTA, clip)
            rows.append({
                "workload": "ocr", "cut": cut, "tensor": OCR_CUTS[cut], "epsilon": eps,
                "delta": DELTA, "clip_norm": clip,
                "sigma": 0.0 if math.isinf(eps) else mech.sigma,
                "dims": int(np.prod(feats.shape[1:])), "n": n,
                "lines_exact": exact, "chars_correct": char,
            })  # fmt: skip
            print(f"ocr {cut} ε={eps:>7} exact={exact:.3f} chars={char:.3f}")
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [e for e in EPSILONS if not math.isinf(e)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = [("fmnist", c, k) for c in ("cut1", "cut2") for k in ("top1", "top1_codec")]
    series += [("ocr", c, "lines_exact") for c in OCR_CUTS]
    for workload, cut, key in series:
        pts = {r["epsilon"]: r[key] for r in rows if r["workload"] == workload and r["cut"] == cut}
        line = ax.plot(
            finite, [pts[e] for e in finite], marker="o", label=f"{workload} {cut} {key}"
        )
        ax.axhline(pts[math.inf], color=line[0].get_color(), ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε per request (δ = 1e-5); dotted: no noise")
    ax.set_ylabel("accuracy (top-1 / lines read exactly)")
    ax.set_title("Local DP on offloaded features: accuracy against ε")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    eps = row["epsilon"]
    return {**row, "epsilon": "inf" if math.isinf(eps) else eps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="Fashion-MNIST test images")
    p.add_argument("--lines", type=int, default=200, help="rendered OCR lines")
    p.add_argument("--out", type=Path, default=RESULTS / "privacy_dp_accuracy.json")
    args = p.parse_args(argv)
    t0 = time.time()
    rows = fmnist_curve(args.images) + ocr_curve(args.lines)
    doc = {
        "benchmark": "privacy_dp_accuracy",
        "command": "python -m benchmarks.privacy.dp_accuracy",
        "mechanism": "Gaussian, L2 clip at the calibration median norm, sensitivity 2*clip, "
        "noise multiplier from common.privacy.noise_multiplier (exact analytic Gaussian)",
        "rows": [_jsonable(r) for r in rows],
        "seconds": round(time.time() - t0, 1),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} ({doc['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
