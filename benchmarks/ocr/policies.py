"""Policies on the OCR workload (issue 16): per detected line, answer on the device (PP-OCRv4),
send its gray region to PP-OCRv6's recogniser, or read it from the whole frame sent to PP-OCRv6
det+rec — the heuristic, LinUCB, Thompson and DQN against the best static policy in the trace
simulator (``policy.compare``), plus the off-policy evaluation check.

The trace is built here from hard frames: every line is read all three ways (the device's
v4 reading and calibrated confidence, v6 on the coded gray region as the gateway would read it,
v6 det+rec on the whole frame, matched by box), with the measured compute times and coded
sizes on this machine as the profile (one exit ``v4``; cut ``region`` after it; cut ``input``
= the frame's JPEG, its bytes and v6 time shared by the frame's lines).

    python -m benchmarks.ocr.policies --frames 40 [--seeds 3]

With ``--decision frame`` (the default) the same lines are replayed with the decision *before*
v4 runs (:mod:`benchmarks.ocr.decide`: a ``camera`` exit in front, the frame's deadline and RTT
as each line's share, the OCR objective, the device class as its compute share), so sending the
JPEG saves the device's v4 pass and the link decides whether that pays; ``--decision line`` is
the earlier protocol (v4 always runs first, 3 s per line, the simulator's default objective).
Trained deciders for the fleet go to benchmarks/results/ocr_deciders/ (``--save-deciders``).

Writes benchmarks/results/policy_trace_ocr.npz and benchmarks/results/ocr_policy.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.frames import frame_record, render_frame
from policy import (
    INPUT_CUT,
    BundleProfile,
    CodecCost,
    CutPointCost,
    ExitCost,
    NetworkSample,
    NetworkScenario,
    ObjectiveWeights,
    SimConfig,
    Simulator,
    Trace,
    dumps_state,
    entropy_from_confidence,
)
from policy._compare import CompareConfig, compare, ope_check, train_policy

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
TRACE = RESULTS / "policy_trace_ocr.npz"
REGION_CODEC = "q4|zstd"


def build_trace(frames: int, seed: int = 0) -> tuple[Trace, dict[str, float]]:
    """Every v4 line of ``frames`` hard test frames read the three ways (see the module doc)."""
    import onnx
    import onnxruntime as ort

    from benchmarks.ocr.app import OcrApp, Policy
    from benchmarks.ocr.fleet import gray_input
    from common import codecs
    from common.pipeline import best_path_model, ctc_best_path, load_pipeline
    from common.pipeline._evaluate import match
    from edge_agent._features import encode_features

    app = OcrApp("edge", 1.0, Policy())
    v6_frame = load_pipeline("ppocr_v6")
    v6 = app.pipeline.model_path("cloud_rec")
    rec = ort.InferenceSession(
        gray_input(best_path_model(onnx.load(str(v6)))).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    conf, edge_ok, region_ok, frame_ok = [], [], [], []
    t = {"v4_ms": 0.0, "region_ms": 0.0, "region_bytes": 0.0, "frame_ms": 0.0, "jpeg": 0.0}
    lines_total = 0
    for i in range(frames):
        f = render_frame(seed, "hard", "test", i)
        truth = frame_record(f, "x")["lines"]
        t0 = time.thread_time()
        bgr, lines = app._read_locally(f.encoded)
        t["v4_ms"] += (time.thread_time() - t0) * 1000
        t0 = time.thread_time()
        cloud = v6_frame(bgr)["lines"]
        t["frame_ms"] += (time.thread_time() - t0) * 1000
        t["jpeg"] += len(f.encoded)
        to_truth = match([ln.box for ln in lines], [x["box"] for x in truth], 0.5, over="min")
        to_cloud = match([ln.box for ln in lines], [c.box for c in cloud], 0.5, over="min")
        for k, ln in enumerate(lines):
            want = truth[to_truth[k]]["text"] if k in to_truth else None
            x = app._region_input(bgr, ln.box)
            features = encode_features(x, REGION_CODEC)
            t0 = time.thread_time()
            out = rec.run(None, {"x": np.asarray(codecs.decode(features.payload), np.float32)})
            t["region_ms"] += (time.thread_time() - t0) * 1000
            t["region_bytes"] += len(features.payload)
            text = ctc_best_path(out[0][0], out[1][0], app.cascade.charset).text
            conf.append(ln.confidence)
            edge_ok.append(want is not None and ln.text == want)
            region_ok.append(want is not None and text == want)
            frame_ok.append(want is not None and k in to_cloud and cloud[to_cloud[k]].text == want)
        lines_total += len(lines)
    n = max(lines_total, 1)
    cost = {
        "lines": lines_total,
        "frames": frames,
        "v4_ms_per_line": t["v4_ms"] / n,
        "region_ms_per_line": t["region_ms"] / n,
        "region_bytes_per_line": t["region_bytes"] / n,
        "frame_ms_per_line": t["frame_ms"] / n,
        "jpeg_bytes_per_line": t["jpeg"] / n,
    }
    profile = BundleProfile(
        "ppocr_v4_lines",
        (ExitCost("v4", cost["v4_ms_per_line"], threshold=0.9),),
        (
            CutPointCost(
                INPUT_CUT,
                -1,
                cost["frame_ms_per_line"],
                {"jpeg": CodecCost(int(cost["jpeg_bytes_per_line"]))},
            ),
            CutPointCost(
                "region",
                0,
                cost["region_ms_per_line"],
                {REGION_CODEC: CodecCost(int(cost["region_bytes_per_line"]))},
            ),
        ),
    )
    c = np.asarray(conf, np.float64)[:, None]
    trace = Trace(
        profile,
        c.astype(np.float32),
        entropy_from_confidence(c).astype(np.float32),
        np.asarray(edge_ok)[:, None],
        np.stack([np.asarray(frame_ok), np.asarray(region_ok)], axis=1),
        ((INPUT_CUT, "jpeg"), ("region", REGION_CODEC)),
        f"PP-OCRv4 lines of {frames} hard test frames (seed {seed})",
    )
    return trace, cost


@dataclass(frozen=True, slots=True)
class LineShare(NetworkScenario):
    """A network scenario whose RTTs are divided by the lines of a frame (each line carries its
    share of its frame's round trip; see :mod:`benchmarks.ocr.decide`)."""

    lines_per_frame: float = 1.0

    def sample(self, times: Any, rng: np.random.Generator) -> NetworkSample:
        s = NetworkScenario.sample(self, times, rng)
        k = 1.0 / self.lines_per_frame
        return NetworkSample(
            s.bandwidth_mbps, s.rtt_ms * k, s.est_bandwidth_mbps, s.est_rtt_ms * k, s.edge_load
        )


def frame_setup(
    trace: Trace, cost: dict[str, Any]
) -> tuple[Trace, SimConfig, dict[str, NetworkScenario], dict[str, Any]]:
    """The trace, simulator settings and networks of the per-frame decision."""
    from benchmarks.ocr.decide import (
        FRAME_DEADLINE_MS,
        LineCosts,
        frame_trace,
        line_profile,
        ocr_weights,
    )

    costs = LineCosts(
        cost["lines"] / cost["frames"], cost["v4_ms_per_line"], cost["region_ms_per_line"],
        cost["region_bytes_per_line"], cost["frame_ms_per_line"], cost["jpeg_bytes_per_line"],
    )  # fmt: skip
    lpf = costs.lines_per_frame
    weights = ocr_weights(lpf)
    base = SimConfig(
        deadline_ms=FRAME_DEADLINE_MS / lpf, rate_hz=2.5, weights=weights, cloud_queue_ms=2.0,
        edge_slowdown=1.0, load_gain=0.0,
    )  # fmt: skip
    networks: dict[str, NetworkScenario] = {
        "4g": LineShare("steady", bandwidth_mbps=10.0, rtt_ms=50.0, lines_per_frame=lpf),
        "3g": LineShare("steady", bandwidth_mbps=1.0, rtt_ms=150.0, lines_per_frame=lpf),
        "varying": LineShare("varying", lines_per_frame=lpf),
        "outages": LineShare("outages", bandwidth_mbps=10.0, rtt_ms=50.0, lines_per_frame=lpf),
    }
    kwargs = {"heuristic": {"weights": weights, "hysteresis": 0.05}}
    return frame_trace(trace, line_profile(costs)), base, networks, kwargs


def save_deciders(
    trace: Trace, base: SimConfig, net: NetworkScenario, classes: dict[str, float], epochs: int,
    out: Path,
) -> dict[str, str]:  # fmt: skip
    """Learned deciders trained on the whole trace under ``net`` per device class, for the
    fleet (``Policy.decider_state``)."""
    out.mkdir(parents=True, exist_ok=True)
    saved = {}
    for cname, share in classes.items():
        sim = Simulator(trace, net, replace(base, compute_share=share))
        for kind in ("linucb", "thompson", "dqn"):
            policy = train_policy(kind, trace, sim, 0, epochs, CompareConfig().kwargs.get(kind, {}))
            path = out / f"{kind}_{cname}.json"
            path.write_bytes(dumps_state(policy))
            saved[f"{kind}/{cname}"] = str(path.relative_to(RESULTS.parents[1]))
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--error-weights", default="6,12,24")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--decision", choices=("frame", "line"), default="frame")
    ap.add_argument("--save-deciders", type=Path, default=RESULTS / "ocr_deciders")
    ap.add_argument("--out", type=Path, default=RESULTS / "ocr_policy.json")
    args = ap.parse_args()
    t0 = time.time()
    cost: dict[str, Any] = {}
    if TRACE.exists() and not args.rebuild:
        trace = Trace.load(TRACE)
        cost = json.loads(TRACE.with_suffix(".json").read_text())
    else:
        trace, cost = build_trace(args.frames)
        trace.save(TRACE)
        TRACE.with_suffix(".json").write_text(json.dumps(cost, indent=1) + "\n")
    print(f"trace: {len(trace)} lines, {cost}")
    print(
        f"edge exact {trace.correct[:, 0].mean():.3f}, frame {trace.cloud_correct[:, 0].mean():.3f},"
        f" region {trace.cloud_correct[:, 1].mean():.3f}"
    )
    # a line's deadline is the frame's (3 s); about 10 lines a frame, a frame every 4 s
    weights = ObjectiveWeights()
    base = SimConfig(deadline_ms=3000.0, rate_hz=2.5, weights=weights, cloud_queue_ms=20.0)
    networks: dict[str, NetworkScenario] = {
        "4g": NetworkScenario("steady", bandwidth_mbps=10.0, rtt_ms=50.0),
        "3g": NetworkScenario("steady", bandwidth_mbps=1.0, rtt_ms=150.0),
        "varying": NetworkScenario("varying"),
        "outages": NetworkScenario("outages", bandwidth_mbps=10.0, rtt_ms=50.0),
    }
    kwargs: dict[str, Any] = {}
    classes = {"phone": 1.0, "iot": 4.0}
    if args.decision == "frame":
        trace, base, networks, kwargs = frame_setup(trace, cost)
        weights = base.weights
        classes = {"phone": 1.0, "iot": 0.25}  # compute shares, not slowdowns
    cfg = CompareConfig(
        seeds=tuple(range(args.seeds)),
        epochs=args.epochs,
        error_weights=tuple(float(w) for w in args.error_weights.split(",") if w),
        kwargs={**CompareConfig().kwargs, **kwargs},
    )
    report: dict[str, Any] = {
        "schema": "aiml021.ocr_policy/1",
        "command": "python -m benchmarks.ocr.policies "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "trace": trace.source,
        "lines": len(trace),
        "cost": cost,
        "objective": {
            "weights": {k: getattr(weights, k) for k in weights.__dataclass_fields__},
            "deadline_ms": base.deadline_ms,
            "rate_hz": base.rate_hz,
        },
        "scenarios": {},
    }
    for cname, slow in classes.items():
        for nname, net in networks.items():
            name = f"{cname}/{nname}"
            t1 = time.time()
            sim_cfg = (
                replace(base, compute_share=slow)
                if args.decision == "frame"
                else replace(base, edge_slowdown=slow)
            )
            rep = compare(trace, net, sim_cfg, cfg)
            rep["seconds"] = time.time() - t1
            report["scenarios"][name] = rep
            st = rep["summary"]["static"]
            print(
                f"{name}: static objective {st['objective']['mean']:.4f} acc "
                f"{st['accuracy']['mean']:.3f}; best learned {rep['best_learned']}"
            )
            for kind, v in rep["summary"].items():
                if kind != "static":
                    g, d = v["gain"], v["accuracy_delta"]
                    print(
                        f"  {kind:<10} objective {v['objective']['mean']:.4f} gain "
                        f"{g['mean'] * 100:+.1f}% [{g['low'] * 100:+.1f}, {g['high'] * 100:+.1f}]"
                        f" Δacc {d['mean'] * 100:+.2f} pt"
                    )
    report["decision"] = args.decision
    report["ope"] = ope_check(trace, networks["varying"], base)
    if args.decision == "frame" and args.save_deciders:
        report["deciders"] = save_deciders(
            trace, base, networks["varying"], classes, args.epochs, args.save_deciders
        )
    report["wall_s"] = time.time() - t0
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
