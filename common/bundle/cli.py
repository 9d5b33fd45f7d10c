"""``aiml021 split | profile | calibrate``: cut ONNX models, profile cut points, calibrate exits."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from common.bundle._split import CutCandidate

log = logging.getLogger(__name__)


def _feeds(args: argparse.Namespace, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """The real input (``--input``) or random data of explicit dims (``--shape``), else None."""
    from common.bundle._shapes import ImagePreprocessing, load_feeds, make_feeds, parse_shape

    if args.input:
        prep = ImagePreprocessing(
            short_side=args.short_side,
            mean=args.mean,
            std=args.std,
            channel_order="rgb" if args.rgb else "bgr",
            height=args.image_height,
        )
        return load_feeds(model, args.input, prep)
    if args.shape:
        return make_feeds(model, dict(parse_shape(s) for s in args.shape))
    return None


def _dims(c: CutCandidate) -> str:
    if c.concrete:
        return " + ".join("x".join(map(str, s)) for s in c.concrete.values())
    return "x".join("N" if d is None else str(d) for d in c.shape)


def _split(args: argparse.Namespace) -> int:
    from common.bundle._multicut import frontier_cuts
    from common.bundle._split import (
        candidate_cuts,
        load_model,
        split_model,
        verify_split,
        write_split,
    )

    model = load_model(args.model)
    feeds = _feeds(args, model)
    if feeds is None:
        log.info("dynamic dims are set to 1 for verification; --input or --shape gives real shapes")
    if not args.cut:
        cands = candidate_cuts(model, feeds)
        multi = frontier_cuts(model, feeds, args.max_tensors) if args.multi else []
        given = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in (feeds or {}).items())
        print(
            f"{len(cands)} candidate cut points in {args.model} (graph order)"
            + (f", {len(multi)} multi-tensor cuts" if args.multi else "")
            + (f", shapes on {given}" if given else "")
            + ":"
        )
        print(f"{'tensor':<56} {'shape':<24} {'f32 bytes/sample':>16}")
        for c in [*cands, *multi]:
            print(f"{c.name:<56} {_dims(c):<24} {c.float32_bytes or '?':>16}")
        print("split with: aiml021 split MODEL --cut TENSOR[,TENSOR...] [--input FILE] -o DIR")
        return 0
    result = split_model(model, args.cut, feeds)
    diff = verify_split(model, result, feeds, tolerance=args.tolerance)
    out = Path(args.output or Path(args.model).with_suffix("").name + "_split")
    head, tail = write_split(result, out)
    print(f"head: {head} (outputs {', '.join(result.cut.head_outputs)})")
    print(f"tail: {tail} (outputs {', '.join(result.cut.tail_outputs)})")
    if result.cut.concrete:
        print(f"cut: {_dims(result.cut)} = {result.cut.bytes} bytes")
    on = "the given input" if feeds is not None else "random input (dynamic dims 1)"
    print(
        f"verified on {on}: max abs diff tail(head(x)) vs full = {diff:.3g} over {result.compared}"
    )
    return 0


def _profile(args: argparse.Namespace) -> int:
    from common.bundle._profile import format_table, profile
    from common.bundle._split import load_model

    feeds = None
    if not Path(args.target).is_dir() and (args.input or args.shape):
        feeds = _feeds(args, load_model(args.target))
    doc = profile(
        args.target,
        feeds=feeds,
        raw=Path(args.input) if args.input and Path(args.target).is_dir() else None,
        multi=args.multi,
        cuts=args.cut,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(format_table(doc))
    out = Path(args.json)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from common.bundle._bundle import load_bundle
    from common.bundle._fit import calibrate_bundle
    from common.bundle._shapes import load_labelled
    from common.data import load_fashion_mnist

    bundle = load_bundle(args.bundle)
    if args.input:
        images, labels = load_labelled(args.input)
    else:
        images, labels = load_fashion_mnist("validation", args.data)
    split = str(args.input) if args.input else "validation"
    record = calibrate_bundle(
        bundle, images, labels, budget=args.budget, split=split, write=not args.dry_run
    )
    if args.curves:
        from common.bundle._fit import risk_coverage_table
        from common.bundle._runner import run_exits

        bundle = load_bundle(args.bundle) if not args.dry_run else bundle
        logits = run_exits(bundle, bundle.preprocess(images))
        Path(args.curves).write_text(
            json.dumps(risk_coverage_table(bundle, logits, labels), indent=1) + "\n"
        )
        print(f"wrote risk-coverage points to {args.curves}")
    print(f"{bundle.name}: calibrated on {split} (n={record['n']}), budget {args.budget:g}")
    print(f"{'exit':<8} {'top-1':>7} {'T':>7} {'ECE before':>11} {'ECE after':>10} "
          f"{'NLL before':>11} {'NLL after':>10} {'threshold':>10}")  # fmt: skip
    for name, m in record["exits"].items():
        thr = "off" if m["threshold"] is None else f"{m['threshold']:.4f}"
        print(
            f"{name:<8} {m['accuracy']:>7.4f} {m['temperature']:>7.4f} {m['ece_before']:>11.4f} "
            f"{m['ece_after']:>10.4f} {m['nll_before']:>11.4f} {m['nll_after']:>10.4f} {thr:>10}"
        )
    c = record["cascade"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in c["exit_share"].items())
    print(f"cascade top-1 {c['accuracy']:.4f} (final {c['final_accuracy']:.4f}); leave at {shares}")
    print(
        "manifest not changed (--dry-run)" if args.dry_run else f"wrote {bundle.root}/manifest.json"
    )
    return 0


def _input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("real input (dynamic dimensions)")
    g.add_argument("--input", help=".npy, .npz (arrays by input name) or an image file")
    g.add_argument(
        "--shape", action="append", help="NAME=1x3x736x1312: random input of these dims (repeat)"
    )
    g.add_argument("--short-side", type=int, default=736, help="image: short side (dynamic H, W)")
    g.add_argument("--image-height", type=int, help="image: fixed height (e.g. 48, recognizers)")
    g.add_argument("--mean", type=float, default=0.5, help="image: (v/255 - mean) / std")
    g.add_argument("--std", type=float, default=0.5)
    g.add_argument("--rgb", action="store_true", help="image: RGB channel order (default BGR)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``split``, ``profile`` and ``calibrate`` subcommands."""
    p = subparsers.add_parser("split", help="cut an ONNX model at an internal tensor")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--cut", help="tensor name to cut at (omit to list candidate cut points)")
    p.add_argument("-o", "--output", help="output directory (default: <model>_split)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max abs diff allowed")
    _input_args(p)
    p.add_argument("--multi", action="store_true", help="also list multi-tensor cuts")
    p.add_argument("--max-tensors", type=int, default=4, help="largest multi-tensor cut listed")
    p.set_defaults(func=_split)

    p = subparsers.add_parser("profile", help="latency and activation bytes per cut point")
    p.add_argument("target", help="bundle directory or ONNX model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=50, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--json", default="profile.json", help="where to write the JSON report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _input_args(p)
    p.add_argument("--multi", action="store_true", help="also profile multi-tensor cuts")
    p.add_argument(
        "--cut", action="append", help="profile only this cut (TENSOR or T1,T2; repeat; bare model)"
    )
    p.set_defaults(func=_profile)

    p = subparsers.add_parser("calibrate", help="fit exit temperatures and thresholds")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--data", help="Fashion-MNIST IDX directory (default: common.data)")
    p.add_argument("--budget", type=float, default=0.01, help="accuracy loss allowed (0.01 = 1 pt)")
    p.add_argument("--dry-run", action="store_true", help="report only, keep the manifest")
    p.add_argument("--curves", help="also write risk-coverage points per exit (JSON) here")
    p.add_argument(
        "--input", help=".npz with 'images' (raw, the manifest's source layout) and 'labels'"
    )
    p.set_defaults(func=_calibrate)
