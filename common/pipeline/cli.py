"""``aiml021 ocr FRAME_OR_DIR`` reads text with a pipeline; ``aiml021 ocr-eval`` measures one."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common.errors import NotFound

log = logging.getLogger(__name__)

IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _images(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGES)
    if not path.is_file():
        raise NotFound(f"{path}: no such frame or directory")
    return [path]


def _redactor() -> Callable[[str], str]:
    from common.privacy import PiiScanner, Redactor

    found: dict[str, int] = {}

    def tally(_where: str, counts: Mapping[str, int]) -> None:
        for kind, n in counts.items():
            found[kind] = found.get(kind, 0) + n
        log.info("redacted from OCR output: %s", dict(found))

    redactor = Redactor(PiiScanner(), tally)
    return lambda text: redactor.text(text, "ocr")


def _ocr(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from common.pipeline._runner import load_pipeline

    pipeline = load_pipeline(args.pipeline, threads=args.threads)
    redact = _redactor() if args.redact_pii else None
    for path in _images(Path(args.frame)):
        with Image.open(path) as img:
            bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
        lines = pipeline(bgr)["lines"]
        if redact is not None:  # personal data never reaches the output
            lines = [dataclasses.replace(ln, text=redact(ln.text)) for ln in lines]
        if args.json:
            print(json.dumps({"frame": str(path), "lines": [ln.to_json() for ln in lines]}))
            continue
        print(f"{path}: {len(lines)} line(s)")
        for ln in lines:
            box = " ".join(f"{x:.0f},{y:.0f}" for x, y in ln.box)
            print(f"  {ln.confidence:.3f}  {ln.score:.3f}  [{box}]  {ln.text}")
    return 0


def _table(doc: dict[str, Any]) -> str:
    rows = ["pipeline             reproduced  accuracy  lines  ECE raw  ECE calibrated (method)"]
    for p in doc["pipelines"]:
        method = p["method"]
        cal = p["calibration"][method]
        rows.append(
            f"{p['pipeline']:<20} {p['reproduction']['same_text_share']:>9.2%}  "
            f"{p['accuracy']:>8.2%}  {p['lines']['test']:>5}  {cal['ece_raw']:>7.2%}  "
            f"{cal['ece_calibrated']:>7.2%} ({method}, score {p['line_score']})"
        )
    return "\n".join(rows)


def _write_calibration(pipeline: Any, result: dict[str, Any], method: str) -> Path:
    """Store the fitted calibration in the pipeline's description (its ``calibrate`` step)."""
    path = Path(pipeline.path)
    doc = json.loads(path.read_text())
    cal = result["calibration"][method]
    for s in doc["steps"]:
        if s["op"] == "calibrate":
            s["params"] = cal["fit"]
    doc["calibration"] = {
        "frames": result["frames"],
        "lines": result["lines"]["calibration"],
        "line_score": result["line_score"],
        "method": method,
        "test_lines": result["lines"]["test"],
        "ece_test_raw": round(cal["ece_raw"], 4),
        "ece_test_calibrated": round(cal["ece_calibrated"], 4),
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces this run, every option spelled out."""
    argv = ["aiml021", "ocr-eval"]
    for name in args.pipeline or []:
        argv += ["--pipeline", name]
    for variant in args.variant or []:
        argv += ["--variant", variant]
    argv += ["--seed", str(args.seed), "--calibration", str(args.calibration)]
    argv += ["--test", str(args.test), "--method", args.method, "--threads", str(args.threads)]
    argv += [*(["--write"] if args.write else []), "--json", args.json]
    return shlex.join(argv)


def _ocr_eval(args: argparse.Namespace) -> int:
    from common.bundle._profile import machine_info
    from common.pipeline._evaluate import evaluate
    from common.pipeline._runner import load_pipeline

    started = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": "aiml021.ocr_eval/1",
        "command": _command(args),
        "machine": machine_info(),
        "method": args.method,
        "pipelines": [],
    }
    for name in args.pipeline or ["ppocr_v4", "ppocr_v6", "ppocr_v4det_v6rec"]:
        pipeline = load_pipeline(name, threads=args.threads)
        result = evaluate(
            pipeline,
            seed=args.seed,
            variants=tuple(args.variant or ["easy", "hard"]),
            calibration=args.calibration,
            test=args.test,
            threads=args.threads,
        )
        # auto: the method with the lowest cross-validated ECE on the calibration lines
        result["method"] = result["chosen_method"] if args.method == "auto" else args.method
        doc["pipelines"].append(result)
        if args.write:
            path = _write_calibration(pipeline, result, result["method"])
            print(f"{name}: calibration written to {path}")
    doc["seconds"] = round(time.perf_counter() - started, 1)
    print(_table(doc))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out} ({doc['seconds']} s)")
    return 0


def _ctc_head(args: argparse.Namespace) -> int:
    import onnx

    from common.pipeline._ctc import best_path_model

    model = best_path_model(onnx.load(args.model), args.from_output)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    print(f"wrote {out}: outputs best [N, T] int64, best_prob [N, T] float32")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ocr``, ``ocr-eval`` and ``ctc-head`` subcommands."""
    p = subparsers.add_parser("ocr", help="read the text lines of frames with an OCR pipeline")
    p.add_argument("frame", help="an image, or a directory searched for images")
    p.add_argument("--pipeline", default="ppocr_v4", help="built-in name, pipeline.json or its dir")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--json", action="store_true", help="one JSON document per frame")
    p.add_argument(
        "--redact-pii",
        action="store_true",
        help="replace e-mails, phone numbers, payment cards, IBANs and IPs in the read text "
        "with [KIND] (common.privacy DLP)",
    )
    p.set_defaults(func=_ocr)

    e = subparsers.add_parser(
        "ocr-eval", help="measure OCR pipelines vs rapidocr and the ground truth; fit calibration"
    )
    e.add_argument("--pipeline", action="append", help="repeatable; default: the three built-ins")
    e.add_argument("--variant", action="append", choices=["easy", "hard"], default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--calibration", type=int, default=40, help="calibration frames per variant")
    e.add_argument("--test", type=int, default=12, help="test frames per variant")
    e.add_argument(
        "--method",
        choices=["auto", "platt", "isotonic", "binned_isotonic"],
        default="auto",
        help="calibration; auto: lowest cross-validated ECE on the calibration split",
    )
    e.add_argument("--threads", type=int, default=1)
    e.add_argument(
        "--write", action="store_true", help="store the fitted calibration in the pipeline"
    )
    e.add_argument("--json", default="benchmarks/results/ocr_pipeline.json")
    e.set_defaults(func=_ocr_eval)

    h = subparsers.add_parser(
        "ctc-head",
        help="append a best-path head (ArgMax, ReduceMax) to a CTC recogniser for serving",
    )
    h.add_argument("model", help="recogniser ONNX ([N, T, classes] output)")
    h.add_argument("-o", "--output", required=True, help="ONNX file to write")
    h.add_argument("--from-output", default=None, help="output to reduce (default: the first)")
    h.set_defaults(func=_ctc_head)
