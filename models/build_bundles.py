"""Turn the trained ONNX exports into committed bundles, calibrate them and write model cards.

    .venv/bin/python models/train.py --out .cache/train          # or the GPU run's outputs
    .venv/bin/python models/build_bundles.py --train-out .cache/train

Needs only numpy/onnx/onnxruntime (no torch). Steps: split the exported graphs into segments
(common.bundle.build_bundle, checked exact), fit temperatures and thresholds on the validation
split (budget 1 accuracy point), evaluate on the test split, profile on this CPU, write
``metrics.json`` and ``MODEL_CARD.md`` in each bundle, and the test-set slice under models/data/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.bundle import Preprocessing, load_bundle
from common.bundle._build import build_bundle
from common.bundle._calibrate import cascade, fit_temperature, select_thresholds
from common.bundle._fit import calibrate_bundle, evaluate_bundle, risk_coverage_table
from common.bundle._profile import profile
from common.bundle._runner import run_exits
from common.data import CLASSES, load_fashion_mnist

MODELS = Path(__file__).resolve().parent
PRE = Preprocessing(scale=1 / 255, mean=[0.2860], std=[0.3530])
BUDGET = 0.01
SLICE_SIZE = 2000


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def write_slice(xt: np.ndarray, yt: np.ndarray) -> Path:
    """First SLICE_SIZE test images (stratification not needed: the test set is shuffled)."""
    out = MODELS / "data"
    out.mkdir(exist_ok=True)
    path = out / "fmnist_test_slice.npz"
    np.savez_compressed(path, images=xt[:SLICE_SIZE], labels=yt[:SLICE_SIZE].astype(np.uint8))
    (out / "README.md").write_text(
        "# Fashion-MNIST test-set slice\n\n"
        f"`fmnist_test_slice.npz`: the first {SLICE_SIZE} images (`images`, uint8 N×28×28) and\n"
        "labels (`labels`, uint8) of the official Fashion-MNIST test set (t10k files), for tests\n"
        "and the demo. Load with `common.data.load_slice`.\n\n"
        "Fashion-MNIST is Copyright (c) 2017 Zalando SE (Zalando Research),\n"
        "https://github.com/zalandoresearch/fashion-mnist, released under the MIT License:\n\n"
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this\n"
        'software and associated documentation files (the "Software"), to deal in the Software\n'
        "without restriction, including without limitation the rights to use, copy, modify, merge,\n"
        "publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons\n"
        "to whom the Software is furnished to do so, subject to the following conditions: The above\n"
        "copyright notice and this permission notice shall be included in all copies or substantial\n"
        'portions of the Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.\n'
    )
    return path


def bundle_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.suffix == ".onnx")


def card(name: str, info: dict[str, Any]) -> str:
    m = info
    lines = [f"# Model card: {name}", "", m["what"], ""]
    lines += [
        "## Data",
        "Fashion-MNIST (Zalando Research, MIT licence), 28×28 grey images, 10 classes, from Debian's",
        "`dataset-fashion-mnist`. Fixed split (`common.data`): train 55,000 / validation 5,000 (seeded",
        "permutation of the official training set) / test 10,000 (official). Preprocessing:",
        "`(x/255 - 0.2860) / 0.3530`.",
        "",
        "## Training",
        f"`{m['train_cmd']}` on {m['train_device']} (torch {m['torch']}), seed {m['seed']}, "
        f"{m['epochs']} epochs, {m['train_seconds']:.0f} s. {m['recipe']}",
        f"Parameters: {m['params']:,}.",
        "",
        "## Accuracy and calibration (ONNX, onnxruntime CPU)",
        "Temperatures fitted on validation (NLL); ECE with 15 bins. Test split unless noted.",
        "",
        "| exit | val top-1 | test top-1 | T | ECE before | ECE after | NLL before | NLL after | AURC | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ex, t in m["test"]["exits"].items():
        v = m["validation"]["exits"][ex]
        thr = "—" if t["threshold"] is None else f"{t['threshold']:.4f}"
        lines.append(
            f"| {ex} | {pct(v['accuracy'])} | {pct(t['accuracy'])} | {t['temperature']:.4f} | "
            f"{pct(t['ece_before'])} | {pct(t['ece_after'])} | {t['nll_before']:.4f} | "
            f"{t['nll_after']:.4f} | {t['aurc']:.4f} | {thr} |"
        )
    lines += [""]
    if len(m["test"]["exits"]) > 1:
        vc, tc = m["validation"]["cascade"], m["test"]["cascade"]
        lines += [
            "## Early exit (thresholds chosen on validation, budget 1.0 point vs the final exit)",
            "",
            "| split | cascade top-1 | final-exit top-1 | loss (points) | "
            + " | ".join(f"leave at {k}" for k in tc["exit_share"])
            + " |",
            "|---|---|---|---|" + "---|" * len(tc["exit_share"]),
        ]
        for label, c, fa in (
            ("validation", vc, vc["final_accuracy"]),
            ("test", tc, m["test"]["exits"]["final"]["accuracy"]),
        ):
            lines.append(
                f"| {label} | {pct(c['accuracy'])} | {pct(fa)} | {100 * (fa - c['accuracy']):.2f} | "
                + " | ".join(pct(s) for s in c["exit_share"].values())
                + " |"
            )
        lines.append("")
    lines += [
        "## Risk–coverage (test, calibrated confidence; answer only the most confident share)",
        "",
        "| exit | "
        + " | ".join(
            f"cov {100 * r['coverage']:.0f}%"
            for r in next(iter(m["test"]["risk_coverage"].values()))
        )
        + " |",
        "|---|" + "---|" * len(next(iter(m["test"]["risk_coverage"].values()))),
    ]
    for ex, rows in m["test"]["risk_coverage"].items():
        lines.append(f"| {ex} (error) | " + " | ".join(pct(r["risk"]) for r in rows) + " |")
    lines.append("")
    if "cascade_to_cloud" in m:
        c = m["cascade_to_cloud"]
        lines += [
            "## Edge→cloud cascade with fmnist_branchy (threshold on validation, 1-point budget)",
            f"Threshold {c['threshold']:.4f} on this model's calibrated confidence: on test "
            f"{pct(c['test_edge_share'])} answered on the edge, cascade top-1 "
            f"{pct(c['test_accuracy'])} vs cloud {pct(c['test_cloud_accuracy'])}.",
            "",
        ]
    p = m["profile"]
    lines += [
        "## Size and latency (this CPU, onnxruntime, 1 thread, batch 1)",
        f"ONNX files in the bundle: {m['bundle_bytes']:,} bytes (full model {m['full_bytes']:,} bytes).",
        f"Full model: median {p['full_ms']['median']:.3f} ms (p10 {p['full_ms']['p10']:.3f}, "
        f"p90 {p['full_ms']['p90']:.3f}); machine {p['machine']['processor']}, "
        f"{p['machine']['cpu_count']} CPUs, shared with other jobs, so medians are noisy.",
        "",
    ]
    if p["cut_points"]:
        lines += [
            "| cut point | shape | float32 bytes/sample | head ms | tail ms |",
            "|---|---|---|---|---|",
        ]
        for c in p["cut_points"]:
            lines.append(
                f"| {c['name']} | {c['shape']} | {c['float32_bytes']} | "
                f"{c['head_ms']['median']:.3f} | {c['tail_ms']['median']:.3f} |"
            )
        lines.append("")
    lines += [
        "## Limits",
        "Fashion-MNIST only; not robust to other image distributions. Timings are from a shared",
        "2-core machine. GPU training is not bit-reproducible (cuDNN); reruns land within noise.",
        "",
        f"Regenerate: `{m['build_cmd']}` (numbers above come from `metrics.json`).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-out", type=Path, default=Path(".cache/train"))
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    log = json.loads((args.train_out / "train_log.json").read_text())
    xv, yv = load_fashion_mnist("validation")
    xt, yt = load_fashion_mnist("test")
    write_slice(xt, yt)
    build_cmd = f"python models/build_bundles.py --train-out {args.train_out} --width {args.width}"
    train_cmd = f"python models/train.py --widths {args.width} --epochs 40 --edge-epochs 30 --seed {log['seed']}"
    specs = [
        (
            "fmnist_branchy",
            f"fmnist_branchy_w{args.width}",
            [("exit1", "exit1_logits"), ("exit2", "exit2_logits"), ("final", "logits")],
            ["cut1", "cut2"],
            "Three-stage residual CNN with two early exits (BranchyNet-style): stage1 → exit1 and "
            "cut1 (32×14×14), stage2 → exit2 and cut2 (64×7×7), stage3 → final logits.",
        ),
        (
            "fmnist_edge_small",
            "fmnist_edge_small",
            [("final", "logits")],
            [],
            "Small standalone CNN (4 conv layers, global average pooling) for edge/cloud cascades.",
        ),
    ]
    for name, src, exits, cuts, what in specs:
        root = MODELS / name
        if root.exists():
            shutil.rmtree(root)
        bundle = build_bundle(
            args.train_out / f"{src}.onnx", root, name=name, version="1.0.0", classes=CLASSES,
            preprocessing=PRE, exits=exits, cuts=cuts, description=what.split(":")[0],
        )  # fmt: skip
        val = calibrate_bundle(bundle, xv, yv, BUDGET)
        bundle = load_bundle(root)
        test = evaluate_bundle(bundle, xt, yt)
        test["risk_coverage"] = risk_coverage_table(
            bundle, run_exits(bundle, bundle.preprocess(xt)), yt
        )
        tl = log["models"][src]
        info: dict[str, Any] = {
            "what": what, "validation": val, "test": test, "params": tl["params"],
            "epochs": tl["epochs"], "train_seconds": tl["seconds"], "torch": log["torch"],
            "train_device": "one NVIDIA H100 (CUDA)" if "cuda" in log["device"] else log["device"],
            "seed": log["seed"], "train_cmd": train_cmd, "build_cmd": build_cmd,
            "recipe": "SGD+Nesterov (0.9, wd 5e-4), OneCycle to lr 0.1, batch 128, crop (pad 2) + "
            "flip" + (", exits trained jointly with loss weights 0.5/0.5/1.0." if cuts else "."),
            "torch_test_accuracy": tl["test"],
            "bundle_bytes": bundle_bytes(root), "full_bytes": bundle.segment_path("full").stat().st_size,
        }  # fmt: skip
        info["profile"] = profile(root, repeats=args.repeats, warmup=20, progress=False)
        if name == "fmnist_edge_small":
            info["cascade_to_cloud"] = edge_cloud_cascade(
                bundle, load_bundle(MODELS / "fmnist_branchy"), xv, yv, xt, yt
            )
        (root / "metrics.json").write_text(json.dumps(info, indent=1) + "\n")
        (root / "MODEL_CARD.md").write_text(card(name, info))
        print(f"{name}: test {[round(e['accuracy'], 4) for e in test['exits'].values()]} "
              f"cascade {test['cascade']}")  # fmt: skip
    shutil.copy(args.train_out / "train_log.json", MODELS / "train_log.json")
    return 0


def edge_cloud_cascade(
    edge: Any, cloud: Any, xv: np.ndarray, yv: np.ndarray, xt: np.ndarray, yt: np.ndarray
) -> dict[str, float]:
    """Edge model answers when confident, else the cloud's full model (threshold on validation)."""

    def logits(x: np.ndarray) -> list[np.ndarray]:
        return [run_exits(edge, edge.preprocess(x))[0], run_exits(cloud, cloud.preprocess(x))[-1]]

    lv, lt = logits(xv), logits(xt)
    temps = [edge.exits[0].temperature, fit_temperature(lv[1], yv)]
    thr = select_thresholds(lv, yv, temps, BUDGET)
    res = cascade(lt, yt, temps, thr)
    return {
        "threshold": float(thr[0] or 1.0),
        "test_edge_share": res.share[0],
        "test_accuracy": res.accuracy,
        "test_cloud_accuracy": float(np.mean(lt[1].argmax(1) == yt)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
