"""The sweep core and the codec-sweep command on a stand-in bundle (numpy head and tail)."""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.codecs import EntropyModel, decode, encode, parse_spec
from common.codecs import cli as codec_cli
from common.codecs._sweep import default_grid, run_sweep


def _quadrant_scores(acts: np.ndarray) -> np.ndarray:
    h, w = acts.shape[2] // 2, acts.shape[3] // 2
    quads = [acts[:, :, :h, :w], acts[:, :, :h, w:], acts[:, :, h:, :w], acts[:, :, h:, w:]]
    return np.stack([q.sum(axis=(1, 2, 3)) for q in quads], axis=1)


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 4, size=n)
    for i, label in enumerate(labels):
        r, c = divmod(int(label), 2)
        images[i, r * 14 : r * 14 + 14, c * 14 : c * 14 + 14] += 100
    return images, labels.astype(np.int64)


def _head(images_f: np.ndarray) -> np.ndarray:
    x = images_f.reshape(-1, 1, 14, 2, 14, 2).mean(axis=(3, 5))
    return np.maximum(np.concatenate([x - 0.3, 0.5 - x], axis=1), 0).astype(np.float32)


def test_sweep_measures_rate_and_accuracy() -> None:
    images, labels = _images(120, 1)
    acts = _head(images[:, None] / 255.0)
    fit = _head(_images(60, 2)[0][:, None] / 255.0)
    grid = default_grid(fit, quick=True)
    assert "int8" in grid and any(s.endswith("|q2|ans") for s in grid)
    result = run_sweep(
        acts, labels, _quadrant_scores, ["raw", "int8", "clip:0,0.6|q2|ans"], fit_activations=fit
    )
    assert result.baseline_accuracy == 100.0
    raw, int8, q2 = result.points
    assert raw.drop == 0.0 and raw.ratio < 1.0  # header included
    assert int8.ratio > 3.4 and q2.bits_per_element < int8.bits_per_element
    assert q2.entropy_model == "spatial" and q2.entropy_bits_per_element is not None
    assert q2.payload_bits_per_element < q2.bits_per_element
    assert result.best_within(100.0) is q2
    assert result.best_within(-1.0) is None
    assert set(result.models) == {"clip:0,0.6|q2|ans"}
    doc = result.to_json()
    assert doc["samples"] == 120 and len(doc["points"]) == 3


class _Session:
    def __init__(self, inp: str, outs: list[str], fn: Any) -> None:
        self._inp, self._outs, self._fn = inp, outs, fn

    def get_inputs(self) -> list[Any]:
        return [types.SimpleNamespace(name=self._inp)]

    def get_outputs(self) -> list[Any]:
        return [types.SimpleNamespace(name=n) for n in self._outs]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._fn(feed[self._inp])


class _Bundle:
    def __init__(self, root: Path) -> None:
        self.root, self.name, self.written = root, "standin", None
        self.manifest = types.SimpleNamespace(input=types.SimpleNamespace(name="input"))

    def cut_point(self, name: str) -> Any:
        return types.SimpleNamespace(name="cut1", head=["stage1"], tail="tail_cut1")

    def session(self, segment: str) -> _Session:
        if segment == "stage1":
            return _Session(
                "input", ["exit1_logits", "cut1"], lambda x: [np.zeros((len(x), 4)), _head(x)]
            )
        return _Session("cut1", ["logits"], lambda a: [_quadrant_scores(a)])

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return (images[:, None] / 255.0).astype(np.float32)

    def update_cut_codec(self, cut: str, spec: str, model_file: str | None) -> None:
        self.written = (cut, spec, model_file)


def test_codec_sweep_command_writes_results_and_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _Bundle(tmp_path)
    monkeypatch.setattr("common.bundle.load_bundle", lambda path: bundle)
    monkeypatch.setattr(
        "common.data.load_fashion_mnist",
        lambda split: _images(80 if split == "validation" else 40, 3),
    )
    parser = argparse.ArgumentParser()
    codec_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "codec-sweep",
            "standin",
            "--cut-point",
            "cut1",
            "--quick",
            "--write",
            "--fit-samples",
            "40",
        ]
    )
    assert args.func(args) == 0
    out = json.loads((tmp_path / "codec_sweep_cut1.json").read_text())
    assert (tmp_path / "codec_sweep_cut1.png").stat().st_size > 1000
    assert out["cut"] == "cut1" and out["chosen"] and out["machine"]["cpu_count"]
    assert bundle.written is not None and bundle.written[1] == out["chosen"]
    chosen = parse_spec(out["chosen"])
    if chosen.needs_entropy_model:
        model = EntropyModel.load(tmp_path / "cut1.entropy.json")
        acts = _head(_images(2, 4)[0][:, None] / 255.0)
        assert (
            decode(encode(acts, chosen, entropy_model=model), entropy_models=model).shape
            == acts.shape
        )
    assert "chosen:" in capsys.readouterr().out
