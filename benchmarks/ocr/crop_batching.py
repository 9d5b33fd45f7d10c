"""Gateway batching of line crops from many devices (issue 16): width buckets against no
batching, equal shapes only, and padding everything, on the same crops.

Crops: every ground-truth line of hard 1280×720 test frames (seed 0) cut from its frame as the
hybrid device sends it (gray, 32 px high, width by aspect ratio: 25–850 px), read by the
gateway's PP-OCRv6 rec_small with its best-path head and gray input (``ppocr_v6_rec_gray``,
:func:`benchmarks.ocr.fleet.gray_input`). Each configuration runs the gateway's own
``DynamicBatcher`` (``DynamicBatching``, fair between devices, deadlines) over its
``OnnxRuntimeBackend`` (1 intra-op thread) in this process, without the network, on the same
crops from ``--devices`` devices:

* ``saturated``: every crop queued at once (throughput = crops / makespan);
* ``open``: Poisson arrivals at ``--rate`` crops/s over all devices, deadline ``--deadline-ms``
  (latency p50/p95, deadline misses).

Padding waste = 1 − (input elements the requests brought / elements computed). Text changes =
crops whose decoded text differs from the crop read alone (padding is zeros on the right: what
PP-OCR's own batched recognition pads with). Configurations run A B A B (``--rounds``).

    python -m benchmarks.ocr.crop_batching --frames 12 --rounds 2

Writes ``benchmarks/results/ocr_crop_batching.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Config:
    """One way the gateway batches the recogniser."""

    name: str
    max_batch_size: int
    width_bucket: int = 0
    max_queue_delay_ms: float = 0.0
    contended_batch_ms: float | None = None


CONFIGS = (
    Config("no batching", 1),
    Config("equal shapes only (today)", 16, 0, 10.0),
    Config("width buckets of 32 px", 16, 32, 10.0),
    Config("width buckets of 64 px", 16, 64, 10.0),
    Config("width buckets of 128 px", 16, 128, 10.0),
    Config("pad everything", 16, 100_000, 10.0),
    Config("width buckets of 64 px, contended cut 5 ms (gateway default)", 16, 64, 10.0, 5.0),
)


def crops(frames: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Gray 32-px regions of every ground-truth line of ``frames`` hard test frames, and the
    lines' texts."""
    from common.frames import render_frame
    from common.pipeline import region_input

    out, truth = [], []
    for i in range(frames):
        f = render_frame(seed, "hard", "test", i)
        bgr = np.ascontiguousarray(f.image[:, :, ::-1])
        for line in f.lines:
            x = region_input(bgr, line.box, 32, 8, 853)
            gray = 0.114 * x[:, :1] + 0.587 * x[:, 1:2] + 0.299 * x[:, 2:3]
            out.append(np.ascontiguousarray(gray, np.float32))
            truth.append(line.text)
    return out, truth


def gray_model(work: Path) -> Path:
    import onnx

    from benchmarks.ocr.fleet import gray_input
    from common.pipeline import best_path_model, load_pipeline

    path = work / "ppocr_v6_rec_gray.onnx"
    if not path.exists():
        v6 = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
        onnx.save(gray_input(best_path_model(onnx.load(str(v6)))), str(path))
    return path


def charset(model: Path) -> list[str]:
    import onnx

    from common.pipeline import charset_from_metadata

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return charset_from_metadata(meta)


async def run_config(
    cfg: Config,
    model: Path,
    regions: list[np.ndarray],
    mode: str,
    devices: int,
    rate: float,
    deadline_s: float,
    seed: int,
) -> dict[str, Any]:
    """One configuration over every crop: what the batcher did and how long it took."""
    from cloud.backends import OnnxRuntimeBackend
    from cloud.batching import BatcherConfig, DynamicBatching
    from cloud.core import spec_from_onnx

    backend = OnnxRuntimeBackend(1, 1, 1)
    spec = spec_from_onnx(model, cfg.max_batch_size, name="ppocr_v6_rec_gray")
    spec = dataclasses.replace(spec, width_bucket=cfg.width_bucket)
    await backend.load(spec)
    sizes: list[int] = []
    compute: list[float] = []

    def observe(key: Any, rows: int, compute_s: float, input_s: float, output_s: float) -> None:
        sizes.append(rows)
        compute.append(compute_s)

    async def run(feeds: Any) -> dict[str, np.ndarray]:
        return await backend.infer(spec.key, feeds, ("best", "best_prob"))

    batching = DynamicBatching(
        BatcherConfig(
            max_batch_size=cfg.max_batch_size,
            max_queue_delay_s=cfg.max_queue_delay_ms / 1000,
            max_queue_size=100_000,
            contended_batch_s=None
            if cfg.contended_batch_ms is None
            else cfg.contended_batch_ms / 1000,
        )
    )
    batcher = batching(spec, run, observe)
    batcher.start()
    # warm-up outside the measurement: one crop alone
    await batcher.submit({"x": regions[0]}, 1)
    sizes.clear()
    compute.clear()
    batcher.input_elements = batcher.computed_elements = 0
    rng = random.Random(seed)
    order = list(range(len(regions)))
    rng.shuffle(order)
    arrivals = [0.0] * len(order)
    if mode == "open":
        t = 0.0
        for k in range(len(order)):
            t += rng.expovariate(rate)
            arrivals[k] = t
    latencies: dict[int, float] = {}
    answers: dict[int, Any] = {}
    missed = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()

    async def one(k: int) -> None:
        nonlocal missed
        i = order[k]
        delay = arrivals[k] - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        deadline = time.monotonic() + deadline_s if mode == "open" else None
        try:
            res = await batcher.submit(
                {"x": regions[i]}, 1, deadline=deadline, flow=f"device-{i % devices}"
            )
        except Exception:  # deadline exceeded: counted, not answered
            missed += 1
            return
        latencies[i] = time.perf_counter() - sent
        answers[i] = res.outputs

    await asyncio.gather(*(one(k) for k in range(len(order))))
    makespan = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    waste = 1 - batcher.input_elements / max(batcher.computed_elements, 1)
    await batcher.close()
    await backend.close()
    lat = sorted(latencies.values())
    return {
        "config": cfg.name,
        "mode": mode,
        "crops": len(regions),
        "answered": len(answers),
        "deadline_missed": missed,
        "makespan_s": makespan,
        "crops_per_s": len(answers) / makespan,
        "batches": len(sizes),
        "mean_batch": float(np.mean(sizes)) if sizes else 0.0,
        "batch_size_hist": {str(k): sizes.count(k) for k in sorted(set(sizes))},
        "compute_s": float(sum(compute)),
        "cpu_ms_per_crop": cpu * 1000 / max(len(answers), 1),
        "padding_waste": waste,
        "latency_p50_ms": float(np.percentile(lat, 50)) * 1000 if lat else float("nan"),
        "latency_p95_ms": float(np.percentile(lat, 95)) * 1000 if lat else float("nan"),
        "_answers": answers,
    }


def texts(answers: dict[int, Any], chars: list[str]) -> dict[int, str]:
    from common.pipeline import ctc_best_path

    return {
        i: ctc_best_path(o["best"][0], o["best_prob"][0], chars).text for i, o in answers.items()
    }


def median_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("makespan_s", "crops_per_s", "cpu_ms_per_crop", "mean_batch", "padding_waste",
            "latency_p50_ms", "latency_p95_ms", "compute_s", "batches", "deadline_missed")  # fmt: skip
    out: dict[str, Any] = {k: float(np.median([r[k] for r in runs])) for k in keys}
    out["rounds"] = [{k: r[k] for k in r if not k.startswith("_")} for r in runs]
    return out


def markdown(cells: list[dict[str, Any]]) -> str:
    rows = [
        "| mode | configuration | crops/s | CPU ms / crop | mean batch | padding waste | "
        "p50 / p95 ms | deadline missed | texts changed | lines exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        rows.append(
            f"| {c['mode']} | {c['config']} | {c['crops_per_s']:.1f} | {c['cpu_ms_per_crop']:.1f} | "
            f"{c['mean_batch']:.1f} | "
            f"{c['padding_waste']:.0%} | {c['latency_p50_ms']:.0f} / {c['latency_p95_ms']:.0f} | "
            f"{c['deadline_missed']:.0f} | {c['texts_changed']} | {c['exact']:.1%} |"
        )
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work or tempfile.mkdtemp(prefix="aiml021-crops-"))
    work.mkdir(parents=True, exist_ok=True)
    model = gray_model(work)
    chars = charset(model)
    regions, truth = crops(args.frames, args.seed)
    widths = [int(r.shape[-1]) for r in regions]
    print(f"{len(regions)} crops, widths {min(widths)}-{max(widths)} px (median "
          f"{int(np.median(widths))}), {args.devices} devices", flush=True)  # fmt: skip
    reference: dict[int, str] = {}
    cells = []
    for mode in args.modes:
        runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CONFIGS}
        for r in range(args.rounds):
            order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))  # A B ... B A
            for cfg in order:
                res = await run_config(
                    cfg, model, regions, mode, args.devices, args.rate, args.deadline_ms / 1000,
                    args.seed + r,
                )  # fmt: skip
                got = texts(res.pop("_answers"), chars)
                if cfg.max_batch_size == 1 and not reference:
                    reference = got
                res["_texts"] = got
                runs[cfg.name].append(res)
                print(f"  {mode} round {r} {cfg.name}: {res['crops_per_s']:.1f} crops/s, "
                      f"{res['cpu_ms_per_crop']:.1f} CPU ms/crop, "
                      f"batch {res['mean_batch']:.1f}, waste {res['padding_waste']:.0%}",
                      flush=True)  # fmt: skip
        for cfg in CONFIGS:
            cell = {"mode": mode, "config": cfg.name, **cfg.__dict__}
            cell.update(median_cell(runs[cfg.name]))
            changed = set()
            for res in runs[cfg.name]:
                changed |= {i for i, t in res["_texts"].items() if reference.get(i, t) != t}
            cell["texts_changed"] = len(changed)
            cell["exact"] = float(
                np.median(
                    [
                        sum(t == truth[i] for i, t in r["_texts"].items()) / len(truth)
                        for r in runs[cfg.name]
                    ]
                )
            )
            cell["texts_changed_examples"] = [
                {"alone": reference[i], "batched": runs[cfg.name][0]["_texts"].get(i, "")}
                for i in sorted(changed)[:5]
            ]
            cells.append(cell)
    return {
        "schema": "aiml021.ocr_crop_batching/1",
        "command": " ".join(["python -m benchmarks.ocr.crop_batching", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "python": platform.python_version(),
        },
        "crops": len(regions),
        "widths": {"min": min(widths), "median": float(np.median(widths)), "max": max(widths)},
        "devices": args.devices,
        "rate_per_s": args.rate,
        "deadline_ms": args.deadline_ms,
        "cells": cells,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12, help="hard test frames (about 10 lines each)")
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument(
        "--modes", nargs="+", default=["saturated", "open"], choices=["saturated", "open"]
    )
    ap.add_argument("--rate", type=float, default=6.0, help="open mode: crops/s over all devices")
    ap.add_argument("--deadline-ms", type=float, default=2000.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "ocr_crop_batching.json")
    args = ap.parse_args()
    t0 = time.time()
    report = asyncio.run(main_async(args))
    report["wall_s"] = time.time() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report["cells"]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
