"""``aiml021 frames OUT``: write a labelled, seeded frame set (images + frames.json)."""

from __future__ import annotations

import argparse
import time


def _frames(args: argparse.Namespace) -> int:
    from common.frames._io import write_frame_set

    counts = {"calibration": args.calibration, "validation": args.validation, "test": args.test}
    variants = ["easy", "hard"] if args.variant == "both" else [args.variant]
    for variant in variants:
        t0 = time.perf_counter()
        path = write_frame_set(args.output, args.seed, variant, counts)
        n = sum(counts.values())
        print(f"{variant}: {n} frames in {time.perf_counter() - t0:.1f} s, ground truth {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``frames`` subcommand."""
    p = subparsers.add_parser("frames", help="render a labelled text-frame set (no download)")
    p.add_argument("output", help="output directory (one subdirectory per variant)")
    p.add_argument("--variant", choices=["easy", "hard", "both"], default="both")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes")
    p.add_argument("--calibration", type=int, default=50, help="frames in the calibration split")
    p.add_argument("--validation", type=int, default=50, help="frames in the validation split")
    p.add_argument("--test", type=int, default=100, help="frames in the test split")
    p.set_defaults(func=_frames)
