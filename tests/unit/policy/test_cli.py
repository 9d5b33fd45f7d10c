"""`aiml021 policy ...` end to end on small inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from common.cli import main
from policy import synthetic_profile


def test_simulate_writes_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = main(["policy", "simulate", "--synthetic", "600", "--device-exits", "1", "--seeds", "2",
               "--epochs", "1", "--policies", "heuristic,linucb", "--json", str(out)])  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["trace"] == "synthetic" and "linucb" in report["summary"]
    assert "gain vs static" in capsys.readouterr().out


def test_decide_prints_one_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps(synthetic_profile().to_dict()))
    assert main(["policy", "decide", "--profile", str(prof), "--confidences", "0.99"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "EXIT_LOCAL"
    assert (
        main(["policy", "decide", "--kind", "nope", "--profile", str(prof), "--confidences", "0.5"])
        == 1
    )


def test_traces_from_a_tiny_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from tests.support.tiny_cnn import build_bundle

    bundle = build_bundle(tmp_path / "b")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 40)
    from policy import Trace
    from policy.traces import build_trace

    trace = build_trace(bundle, images, labels, fit_images=images[:20], timing_samples=3, batch=16)
    assert len(trace) == 40 and trace.profile.n_exits == 2
    assert trace.options[0] == ("input", "raw") and ("cut1", "q4|ans") in trace.options
    cut = trace.profile.cut("cut1")
    assert cut.after_exit == 0 and cut.codecs["int8"].bytes < 8 * 14 * 14 * 4
    path = tmp_path / "t.npz"
    trace.save(path)
    assert Trace.load(path).source == "tiny_cnn:1"
