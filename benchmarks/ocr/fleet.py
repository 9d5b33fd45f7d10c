"""OCR fleet benchmark (issue 16): many device processes reading hard 1280×720 frames, each with
its own CPU share and shaped link, against one gateway (PP-OCRv6 rec with its best-path head, in
a Triton-layout repository) and the cloud's whole-frame OCR (PP-OCRv6 det+rec).

Systems: ``edge`` (PP-OCRv4 on the device), ``cloud`` (the frame's JPEG to the cloud's v6
det+rec), ``hybrid`` (v4 on the device; doubtful lines' regions to the gateway, whole frames when
most lines are doubtful on a fast link, deferred while offline).

    python -m benchmarks.ocr.fleet --devices 8 --frames 3 --links 4g 3g

Writes ``benchmarks/results/ocr_fleet.json`` (``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CLASSES = {"phone": 1.0, "iot": 0.25}
LINKS: dict[str, dict[str, float]] = {
    # benchmarks.e2e.run's scenarios (uplink shaped in userspace by linkem, both directions)
    "lan": {"rtt_ms": 2, "bandwidth_mbit": 1000},
    "wifi": {"rtt_ms": 20, "bandwidth_mbit": 50, "jitter_ms": 4, "loss": 0.001},
    "4g": {"rtt_ms": 50, "bandwidth_mbit": 10, "jitter_ms": 10, "loss": 0.005},
    "3g": {"rtt_ms": 150, "bandwidth_mbit": 1, "jitter_ms": 30, "loss": 0.01},
    "outage": {"rtt_ms": 50, "bandwidth_mbit": 10, "jitter_ms": 10, "loss": 0.005,
               "outage_period_s": 20, "outage_duration_s": 8},
}  # fmt: skip
SYSTEMS = ("edge", "cloud", "hybrid")
POLICY = {
    "threshold": 0.9,
    "frame_share": 1.01,
    "frame_min_mbit": 5.0,
    "codec": "q4|zstd",
    "gray": True,
    "height": 32,
    "batch_regions": True,
    "decider": "heuristic",
    "decider_state": "",
    "deadline_ms": 1500.0,
}
"""Hybrid's default: the policy engine's heuristic decides per frame (the JPEG to the cloud, or
v4 on the device) and per line (device, region, defer); a frame's regions go as one request.
``--policy '{"decider": "", "batch_regions": false}'`` is the earlier fixed rule."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the session ``pid`` leads (each server starts one: Triton's includes
    tritonserver and its python-backend stubs) from /proc, waited-for children included."""
    from benchmarks.ocr.triton_frames import session_cpu_seconds

    return session_cpu_seconds(pid)


def frames_json(work: Path, n: int, seed: int) -> Path:
    out = work / "frames"
    path = out / "hard" / "frames.json"
    if not path.exists():
        subprocess.run(
            [sys.executable, "-m", "common.cli", "frames", str(out), "--variant", "hard",
             "--seed", str(seed), "--calibration", "0", "--validation", "0", "--test", str(n)],
            check=True, cwd=ROOT, capture_output=True,
        )  # fmt: skip
    return path


def gray_input(model: Any, height: int = 48) -> Any:
    """The recogniser with a one-channel input ``x`` ``[N, 1, h, w]`` of any height: the graph
    scales it to the recogniser's ``height`` (linear, aspect kept) and repeats it to three
    channels, so the device sends a gray region at a lower height (bytes: a third, times h/48)."""
    import onnx
    from onnx import helper

    g = model.graph
    (inp,) = [i for i in g.input if i.name == "x"]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    for node in g.node:
        node.input[:] = ["x_rgb" if n == "x" else n for n in node.input]
    c = helper.make_tensor
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    g.initializer.extend([
        c("gi_target", f32, [], [float(height)]), c("gi_two", i64, [1], [2]),
        c("gi_ones", f32, [2], [1.0, 1.0]), c("gi_roi", f32, [0], []),
    ])  # fmt: skip
    prefix = [
        helper.make_node("Shape", ["x"], ["gi_shape"]),
        helper.make_node("Gather", ["gi_shape", "gi_two"], ["gi_h"]),
        helper.make_node("Cast", ["gi_h"], ["gi_hf"], to=f32),
        helper.make_node("Div", ["gi_target", "gi_hf"], ["gi_s"]),
        helper.make_node("Concat", ["gi_ones", "gi_s", "gi_s"], ["gi_scales"], axis=0),
        helper.make_node("Resize", ["x", "gi_roi", "gi_scales"], ["gi_x48"], mode="linear"),
        helper.make_node("Concat", ["gi_x48", "gi_x48", "gi_x48"], ["x_rgb"], axis=1),
    ]
    nodes = [*prefix, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    g.input.remove(inp)
    g.input.insert(0, helper.make_tensor_value_info("x", f32, [dims[0], 1, None, None]))
    onnx.checker.check_model(model)
    return model


def model_repository(work: Path) -> Path:
    """PP-OCRv6 rec_small with its best-path head in Triton's layout (what the gateway serves),
    for RGB regions and for gray ones."""
    import onnx

    from benchmarks.ocr.app import CLOUD_REC, CLOUD_REC_GRAY
    from common.pipeline import best_path_model, load_pipeline

    repo = work / "models"
    v6 = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
    for name, wrap in ((CLOUD_REC, lambda m: m), (CLOUD_REC_GRAY, gray_input)):
        target = repo / name / "1" / "model.onnx"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(wrap(best_path_model(onnx.load(str(v6)))), str(target))
    return repo


@contextlib.contextmanager
def child(cmd: list[str], log: Path, port_file: Path, timeout_s: float = 120) -> Iterator[Any]:
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            # distinct frames repeat no region, but a cached answer would hide cloud compute
            env=dict(os.environ, PYTHONUNBUFFERED="1", AIML021_GATEWAY_CACHE__FULL_MODELS="false"),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while not (port_file.exists() and port_file.stat().st_size):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2]} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def gateway_port(port_file: Path) -> int:
    doc = json.loads(port_file.read_text())
    return int(doc["port"]) if isinstance(doc, dict) else int(doc)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def emulate(devices: list[dict[str, Any]], link: dict[str, float], region_ms: float) -> None:
    """Adds ``emulated_latency_s`` to every frame: the latency the run's own measurements give on
    an uncontended host. Each device computes one thing at a time for ``device_cpu_s / share``;
    its uplink sends a frame's payload at the link's rate plus half the RTT; the gateway and the
    frame service are each one FIFO server taking the frame's CPU time there (the frame
    service's own ``cloud_ms``, thread CPU time; for the gateway ``region_ms`` per region: its
    process CPU over the cell per region sent, as its reported compute is wall time); the answer takes
    another half RTT. Arrivals are each device's own (its clock from its first frame); jitter,
    loss and answer bytes are left out. This host's two cores are shared by a dozen busy
    processes, so wall-clock latency there measures the host, not the system."""
    rtt = link["rtt_ms"] / 1000
    pending: list[tuple[float, str, dict[str, Any]]] = []
    for dev in devices:
        device_free = link_free = 0.0
        for f in sorted(dev["frames"], key=lambda f: f["arrival_s"]):
            # the link's rate when the frame arrived (a --link-schedule changes it)
            bps = (f.get("link_mbit") or link["bandwidth_mbit"]) * 1e6
            t = f["arrival_s"]
            if f["device_cpu_s"] > 0:  # a frame sent before v4 waits for no device compute
                t = max(t, device_free) + f["device_cpu_s"] / dev["share"]
                device_free = t
            if f["bytes_up"] == 0 or dev["system"] == "edge":
                f["emulated_latency_s"] = t - f["arrival_s"]
                continue
            up = max(t, link_free) + f["bytes_up"] * 8 / bps
            link_free = up
            service = "frame" if f.get("route_frame") else "gateway"
            pending.append((up + rtt / 2, service, f))
    free = {"frame": 0.0, "gateway": 0.0}
    for at, service, f in sorted(pending, key=lambda p: p[0]):
        ms = f["cloud_ms"] if service == "frame" else region_ms * _regions(f)
        done = max(at, free[service]) + ms / 1000
        free[service] = done
        f["emulated_latency_s"] = done + rtt / 2 - f["arrival_s"]


def _regions(f: dict[str, Any]) -> int:
    return int(f.get("route_region", 0) + f.get("route_replayed", 0))


def summarize(devices: list[dict[str, Any]], cloud_cpu_s: float) -> dict[str, Any]:
    frames = [f for d in devices for f in d["frames"]]
    n = max(len(frames), 1)
    lat = [f["latency_s"] for f in frames]
    emu = [f["emulated_latency_s"] for f in frames if "emulated_latency_s" in f]
    lines = sum(f["lines"] for f in frames)
    routes = {
        k[6:]: sum(f[k] for f in frames)
        for k in (frames[0] if frames else {})
        if k.startswith("route_")
    }
    answered = max(sum(routes.values()), 1)
    return {
        "frames": len(frames),
        "lines": lines,
        "lines_exact": sum(f["exact"] for f in frames) / max(lines, 1),
        "chars_correct": sum(f["chars_correct"] for f in frames)
        / max(sum(f["chars"] for f in frames), 1),
        "latency_p50_s": pct(lat, 50),
        "latency_p95_s": pct(lat, 95),
        "latency_p99_s": pct(lat, 99),
        "emulated_p50_s": pct(emu, 50),
        "emulated_p95_s": pct(emu, 95),
        "emulated_p99_s": pct(emu, 99),
        "payload_bytes_per_frame": sum(f["bytes_up"] for f in frames) / n,
        "requests_per_frame": sum(f.get("requests", 0) for f in frames) / n,
        "frame_decisions": {
            d: sum(f.get("decision") == d for f in frames) / n
            for d in sorted({f.get("decision", "") for f in frames} - {""})
        },
        "wire_bytes_up_per_frame": sum(d["wire_bytes_up"] for d in devices) / n,
        "wire_bytes_down_per_frame": sum(d["wire_bytes_down"] for d in devices) / n,
        "cloud_model_ms_per_frame": sum(f["cloud_ms"] for f in frames) / n,
        "cloud_cpu_s_per_1000_frames": cloud_cpu_s / n * 1000,
        "device_cpu_s_per_frame": sum(f["device_cpu_s"] for f in frames) / n,
        "device_busy_s_per_frame": sum(f["device_busy_s"] for f in frames) / n,
        "route_share": {k: v / answered for k, v in routes.items()},
        "errors": sum(len(f["errors"]) for f in frames),
        "replayed": sum(d["replayed"] for d in devices),
    }


def run_cell(
    work: Path, system: str, link: str, args: argparse.Namespace, gw_port: int, ocr_port: int,
    pids: list[int],
) -> dict[str, Any]:  # fmt: skip
    """One (link, system): every device at once; cloud CPU is the gateway's + the frame
    service's CPU time over the cell."""
    procs, outs = [], []
    c0 = [cpu_seconds(p) for p in pids]
    for d in range(args.devices):
        cls = "phone" if d % 2 == 0 else "iot"
        out = work / f"{link}-{system}-{d}.json"
        outs.append((cls, out))
        idx = [(d * args.frames + k) % args.frame_pool for k in range(args.frames)]
        cmd = [
            sys.executable, "-m", "benchmarks.ocr.device", "--system", system,
            "--share", str(CLASSES[cls]), "--link", json.dumps(LINKS[link]),
            "--gateway", f"127.0.0.1:{gw_port}", "--frame-service", f"127.0.0.1:{ocr_port}",
            "--cloud-target", args.cloud_target,
            "--frames-json", str(args.frames_path), "--frame-index", *map(str, idx),
            "--interval", str(args.interval), "--seed", str(args.seed * 1000 + d),
            "--policy", json.dumps(args.policy), "--device-id", f"ocr-{cls}-{d}", "--out", str(out),
            "--link-schedule", json.dumps(args.link_schedule),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stderr=open(work / f"{out.stem}.log", "wb")))
    try:
        for p in procs:
            p.wait(args.cell_timeout)
    finally:  # a cell that timed out or was interrupted leaves no device process behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    gw_cpu, frame_cpu = (cpu_seconds(p) - c for p, c in zip(pids, c0, strict=True))
    cloud_cpu = gw_cpu + frame_cpu
    docs: dict[str, list[dict[str, Any]]] = {c: [] for c in CLASSES}
    failed = 0
    for (cls, out), p in zip(outs, procs, strict=True):
        if p.returncode == 0 and out.exists():
            docs[cls].append(json.loads(out.read_text()))
        else:
            failed += 1
    every = [d for ds in docs.values() for d in ds]
    regions = sum(_regions(f) for d in every for f in d["frames"])
    region_ms = gw_cpu * 1000 / regions if regions else 0.0
    emulate(every, LINKS[link], region_ms)
    cell = {
        "link": link, "system": system, "failed_devices": failed, "load_avg": os.getloadavg(),
        "gateway_cpu_s": gw_cpu, "frame_service_cpu_s": frame_cpu, "gateway_ms_per_region": region_ms,
        "all": summarize(every, cloud_cpu),
        # cloud CPU is shared by the classes: split by frames
        "by_class": {c: summarize(ds, cloud_cpu * sum(len(d["frames"]) for d in ds)
                                  / max(sum(len(d["frames"]) for d in every), 1))
                     for c, ds in docs.items() if ds},
    }  # fmt: skip
    cell["devices"] = every
    return cell


def markdown(cells: list[dict[str, Any]]) -> str:
    rows = [
        "| link | system | class | frames | lines exact | chars correct | p50 / p95 / p99 s (emulated) | "
        "p50 / p95 / p99 s (wall, contended) | "
        "payload B/frame | wire B/frame up | req/frame | cloud CPU s / 1k frames | device CPU s/frame | "
        "routes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        for cls, s in [("all", c["all"]), *c["by_class"].items()]:
            routes = ", ".join(f"{k} {v:.0%}" for k, v in s["route_share"].items() if v)
            rows.append(
                f"| {c['link']} | {c['system']} | {cls} | {s['frames']} | {s['lines_exact']:.1%} | "
                f"{s['chars_correct']:.1%} | {s['emulated_p50_s']:.2f} / {s['emulated_p95_s']:.2f} / "
                f"{s['emulated_p99_s']:.2f} | {s['latency_p50_s']:.2f} / {s['latency_p95_s']:.2f} / "
                f"{s['latency_p99_s']:.2f} | {s['payload_bytes_per_frame']:,.0f} | "
                f"{s['wire_bytes_up_per_frame']:,.0f} | {s.get('requests_per_frame', 0):.1f} | "
                f"{s['cloud_cpu_s_per_1000_frames']:,.0f} | "
                f"{s['device_cpu_s_per_frame']:.2f} | {routes} |"
            )
    return "\n".join(rows)


def main() -> None:
    # A SIGTERM (kill, pkill, a CI timeout) ends the run through its ``finally`` blocks, so the
    # gateway and frame service, in sessions of their own, are stopped too, not orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--frames", type=int, default=3, help="frames per device")
    ap.add_argument("--frame-pool", type=int, default=24, help="distinct hard test frames")
    ap.add_argument("--links", nargs="+", default=["4g", "3g"], choices=sorted(LINKS))
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--interval", type=float, default=6.0, help="mean seconds between frames")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cell-timeout", type=float, default=900)
    ap.add_argument("--policy", type=json.loads, default={}, help="JSON over POLICY's fields")
    ap.add_argument("--link-schedule", type=json.loads, default=[],
                    help='mid-run link changes: [[t_s, {"bandwidth_mbit": b, "rtt_ms": r}], ...]')  # fmt: skip
    ap.add_argument("--cloud-target", choices=("gateway", "service", "triton"), default="service",
                    help="whole frames (cloud-only, hybrid's frame route) to the gateway's "
                         "PP-OCRv6 pipeline model (ppocr_v6), to benchmarks/ocr/cloud_ocr.py or "
                         "to the same pipeline in a real Triton (benchmarks/ocr/triton_frames.py)")  # fmt: skip
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "ocr_fleet.json")
    args = ap.parse_args()
    args.policy = {**POLICY, **args.policy}
    work = args.work or Path(tempfile.mkdtemp(prefix="aiml021-ocr-"))
    work.mkdir(parents=True, exist_ok=True)
    args.frames_path = frames_json(work, args.frame_pool, args.seed)
    repo = model_repository(work)
    if args.cloud_target == "gateway":
        from benchmarks.ocr.gateway_frames import pipeline_repository

        pipeline_repository(repo)  # the whole-frame pipeline beside the recognisers
    gw_file, ocr_file = work / "gateway_ports.json", work / "cloud_ocr.port"
    for f in (gw_file, ocr_file):
        f.unlink(missing_ok=True)
    gw_cmd = [
        sys.executable, "-m", "cloud", "serve", "--models", str(repo), "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "0", "--port-file", str(gw_file), "--insecure",
        "--metadata-url", f"sqlite:///{work / 'metadata.sqlite3'}",
    ]  # fmt: skip
    ocr_cmd = [sys.executable, "-m", "benchmarks.ocr.cloud_ocr", "--port-file", str(ocr_file)]
    from benchmarks.ocr.triton_frames import triton_peer

    cells = []
    t0 = time.time()
    with (
        child(gw_cmd, work / "gateway.log", gw_file) as gw,
        child(ocr_cmd, work / "cloud_ocr.log", ocr_file) as ocr,
        triton_peer(args.cloud_target == "triton") as triton,
    ):
        gw_port, ocr_port = gateway_port(gw_file), int(ocr_file.read_text())
        frame_pid = ocr.pid
        if triton is not None and triton.proc is not None:  # whole frames to Triton instead
            ocr_port, frame_pid = triton.http_port, triton.proc.pid
        for link in args.links:
            for system in args.systems:
                cell = run_cell(work, system, link, args, gw_port, ocr_port, [gw.pid, frame_pid])
                cells.append(cell)
                print("\n".join(markdown([cell]).splitlines()[2:]), flush=True)
    report = {
        "schema": "aiml021.ocr_fleet/1",
        "command": " ".join(["python -m benchmarks.ocr.fleet", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "wall_s": time.time() - t0,
        "cpu_count": os.cpu_count(),
        "classes": CLASSES,
        "links": {k: LINKS[k] for k in args.links},
        "policy": args.policy,
        "link_schedule": args.link_schedule,
        "cloud_target": args.cloud_target,
        "devices": args.devices,
        "frames_per_device": args.frames,
        "interval_s": args.interval,
        "method": {
            "cpu_share": "device compute runs on one thread and sleeps until thread CPU time / share "
            "of wall time has passed (phone 1.0, IoT 0.25 core)",
            "link": "benchmarks.e2e.linkem userspace proxies per device (delay, jitter, loss as RTO "
            "delay, token-bucket bandwidth both ways, outages)",
            "cloud_cpu": "CPU time of the gateway and the frame-OCR process over the cell "
            "(idle overhead included), per 1,000 frames",
            "lines_exact": "ground-truth lines whose matched answer (box overlap >= 0.5 of the "
            "smaller box) has exactly its text",
        },
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(cells))
    print(f"wrote {args.out} (work dir {work})")


if __name__ == "__main__":
    main()
