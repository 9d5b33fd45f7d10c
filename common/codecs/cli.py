"""``aiml021 codec-sweep BUNDLE --cut-point C``: the rate–distortion trade-off of a cut point.

Runs the validation split through head -> codec -> tail for a grid of codec settings, prints a
table (bits per element, ratio vs float32, accuracy and drop, encode/decode time), writes JSON
and a PNG plot, picks the smallest setting within the accuracy-loss budget and, with
``--write``, stores it (and its fitted entropy model) as the cut point's default in the bundle.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

from common.codecs._sweep import SweepResult, default_grid, plot, run_sweep

log = logging.getLogger(__name__)
BATCH = 500


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``codec-sweep`` subcommand."""
    p = subparsers.add_parser(
        "codec-sweep",
        help="measure codec settings at a cut point (accuracy vs bits/element)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="model bundle directory (or its manifest.json)")
    p.add_argument("--cut-point", required=True, help="cut point name from the manifest, e.g. cut1")
    p.add_argument("--budget", type=float, default=0.5, help="accuracy-loss budget in points")
    p.add_argument(
        "--spec",
        action="append",
        help="codec spec to try (repeatable); default: a grid derived from the activations",
    )
    p.add_argument("--quick", action="store_true", help="smaller default grid")
    p.add_argument("--limit", type=int, default=0, help="use the first N validation images only")
    p.add_argument(
        "--fit-samples",
        type=int,
        default=5000,
        help="training images whose activations fit the entropy models",
    )
    p.add_argument("--out", type=Path, help="JSON path (PNG beside it); default under the bundle")
    p.add_argument("--write", action="store_true", help="store the chosen codec in the bundle")
    p.set_defaults(func=run)


def _activations(bundle: Any, cut_name: str, images: np.ndarray) -> np.ndarray:
    cut = bundle.cut_point(cut_name)
    sessions = [bundle.session(seg) for seg in cut.head]
    parts = []
    for start in range(0, images.shape[0], BATCH):
        tensors: dict[str, np.ndarray] = {
            bundle.manifest.input.name: bundle.preprocess(images[start : start + BATCH])
        }
        for sess in sessions:
            feed = {i.name: tensors[i.name] for i in sess.get_inputs()}
            names = [o.name for o in sess.get_outputs()]
            tensors.update(zip(names, sess.run(names, feed), strict=True))
        parts.append(tensors[cut.name])
    return np.concatenate(parts).astype(np.float32)


def _tail(bundle: Any, cut_name: str) -> Any:
    cut = bundle.cut_point(cut_name)
    sess = bundle.session(cut.tail)
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name

    def tail(x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [sess.run([out_name], {in_name: x[s : s + BATCH]})[0] for s in range(0, len(x), BATCH)]
        )

    return tail


def machine_info() -> dict[str, Any]:
    import os

    import constriction
    import zstandard

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "constriction": getattr(constriction, "__version__", "0.4.1"),
        "zstandard": zstandard.__version__,
        # other work shares these cores; timings under load are upper bounds
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run(args: argparse.Namespace) -> int:
    from common.bundle import load_bundle
    from common.data import load_fashion_mnist

    bundle = load_bundle(args.bundle)
    bundle.cut_point(args.cut_point)  # NotFound early, naming the known cut points
    images, labels = load_fashion_mnist("validation")
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    train_images, _ = load_fashion_mnist("train")
    fit_images = train_images[
        np.random.default_rng(0).permutation(len(train_images))[: args.fit_samples]
    ]
    print(f"codec-sweep {bundle.name} cut {args.cut_point}: {len(images)} validation images")
    acts = _activations(bundle, args.cut_point, images)
    fit_acts = _activations(bundle, args.cut_point, fit_images)
    specs = args.spec or default_grid(fit_acts, quick=args.quick)
    result = run_sweep(
        acts,
        labels,
        _tail(bundle, args.cut_point),
        specs,
        fit_activations=fit_acts,
        cut=args.cut_point,
        progress=print,
    )
    best = result.best_within(args.budget)
    out = args.out or Path(bundle.root) / f"codec_sweep_{args.cut_point}.json"
    _write(result, out, bundle.name, args, best.spec if best else None)
    _print_table(result, args.budget)
    if best is None:
        print(f"no setting within {args.budget} points")
        return 1
    print(
        f"chosen: {best.spec} ({best.bits_per_element:.3f} bits/element, {best.ratio:.1f}x, drop {best.drop:+.2f} points)"
    )
    if args.write:
        model = result.models.get(best.spec)
        model_file = None  # relative to the bundle directory, as the manifest records it
        if model is not None:
            model_file = f"{args.cut_point}.entropy.json"
            model.save(Path(bundle.root) / model_file)
        bundle.update_cut_codec(args.cut_point, best.spec, model_file)
        print(f"wrote default codec of {args.cut_point} into {bundle.root}/manifest.json")
    return 0


def _write(
    result: SweepResult, out: Path, name: str, args: argparse.Namespace, chosen: str | None
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "bundle": name,
        "cut": args.cut_point,
        "split": "validation",
        "budget_points": args.budget,
        "chosen": chosen,
        "machine": machine_info(),
        **result.to_json(),
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    png = out.with_suffix(".png")
    plot(result, str(png), f"{name} {args.cut_point}: accuracy vs bits/element", args.budget)
    print(f"wrote {out} and {png}")


def _print_table(result: SweepResult, budget: float) -> None:
    print(f"\nbaseline (float32) accuracy {result.baseline_accuracy:.2f}%  budget {budget} points")
    print(
        f"{'spec':42s} {'bits/el':>8s} {'ratio':>7s} {'acc%':>7s} {'drop':>6s} {'enc ms':>7s} {'dec ms':>7s}"
    )
    for p in sorted(result.points, key=lambda p: p.bits_per_element):
        print(
            f"{p.spec:42s} {p.bits_per_element:8.3f} {p.ratio:7.1f} {p.accuracy:7.2f} "
            f"{p.drop:+6.2f} {p.encode_ms:7.3f} {p.decode_ms:7.3f}"
        )


__all__ = ["machine_info", "register", "run"]
