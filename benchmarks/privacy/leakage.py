"""Measured leakage: how well an inversion decoder reconstructs the input from offloaded features.

    python -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.13.0
    PYTHONPATH=.:generated/python:.venv/lib/python3.11/site-packages \\
        /tmp/venv-torch/bin/python -m benchmarks.privacy.leakage [--quick]

(PyTorch on the CPU in a venv of its own, the project's packages from .venv: torch is a
benchmark-only dependency, never installed in the shared environment or CI.)

The attacker sees what leaves the device and knows the model and the mechanism: it trains a
convolutional decoder (MSE, Adam) from features of training inputs to the inputs, on features
released exactly as the device releases them, and is scored on held-out inputs:

- Fashion-MNIST (models/fmnist_branchy) at cut1 and cut2: PSNR and SSIM of the reconstruction,
  and the top-1 of the full model on the reconstruction (does it still show what the item is?);
- OCR lines with PP-OCRv4's recogniser split at its backbone output and mid-backbone: PSNR/SSIM,
  and whether the recogniser itself reads the text back from the reconstruction (exact lines and
  characters).

Releases: ``raw`` float features, ``codec`` (the cut's default codec, decoded; for the OCR cuts
``int8|zstd``), and differential privacy at several ε (clip at the calibration median norm,
Gaussian noise; fresh noise on every release, training included). ``floor`` is the mean training
input (what an attacker knows with no features at all). Writes
benchmarks/results/privacy_leakage.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from benchmarks.privacy._workloads import (
    FmnistSplit,
    OcrSplit,
    cer,
    fmnist,
    machine,
    render_lines,
)
from common.codecs import decode, encode
from common.privacy import GaussianMechanism

RESULTS = Path(__file__).resolve().parents[1] / "results"
DELTA = 1e-5
FMNIST_EPS = [16.0, 1024.0, 4096.0, 16384.0]
OCR_EPS = [1024.0, 16384.0, 65536.0]
OCR_CODEC = "int8|zstd"


# -- metrics ---------------------------------------------------------------------------------
def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """Mean PSNR (dB, data range 1) over images."""
    mse = ((x - y) ** 2).reshape(len(x), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM (Gaussian window σ=1.5, data range 1; Wang et al. 2004) over 2-D images."""
    c1, c2 = 0.01**2, 0.03**2
    out = []
    for a, b in zip(x.astype(np.float64), y.astype(np.float64), strict=True):
        mu_a, mu_b = gaussian_filter(a, 1.5), gaussian_filter(b, 1.5)
        va = gaussian_filter(a * a, 1.5) - mu_a**2
        vb = gaussian_filter(b * b, 1.5) - mu_b**2
        cov = gaussian_filter(a * b, 1.5) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
        out.append(s.mean())
    return float(np.mean(out))


# -- releases ----------------------------------------------------------------------------------
def releases(
    codec: str, eps_list: list[float], clip: float
) -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    def coded(f: np.ndarray, _seed: int) -> np.ndarray:
        return np.stack([np.asarray(decode(encode(v[None], codec)))[0] for v in f])

    out: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
        "raw": lambda f, _seed: f,
        "codec": coded,
    }
    for eps in eps_list:
        out[f"dp_eps{eps:g}"] = _dp(GaussianMechanism(eps, DELTA, clip))
    return out


def _dp(mech: GaussianMechanism) -> Callable[[np.ndarray, int], np.ndarray]:
    def release(f: np.ndarray, seed: int) -> np.ndarray:
        return mech.apply(f, np.random.default_rng(seed))

    return release


# -- decoders ----------------------------------------------------------------------------------
def fit_ridge(
    feats: np.ndarray, targets: np.ndarray, lambdas: tuple[float, ...] = (1e-2, 1e-1, 1, 10, 100)
) -> Callable[[np.ndarray], np.ndarray]:
    """Linear decoder (kernel ridge with a linear kernel, the dual form: features may have far
    more dimensions than there are samples); λ picked on the last fifth of the training set."""
    x = feats.reshape(len(feats), -1).astype(np.float64)
    mu, scale = x.mean(0), float(x.std()) or 1.0
    x = (x - mu) / scale
    y = targets.reshape(len(targets), -1).astype(np.float64)
    y_mu = y.mean(0)
    y = y - y_mu
    n_fit = int(len(x) * 0.8)
    k = x @ x.T / x.shape[1]
    best, best_err = lambdas[0], math.inf
    for lam in lambdas:
        a = np.linalg.solve(k[:n_fit, :n_fit] + lam * np.eye(n_fit), y[:n_fit])
        err = float(((k[n_fit:, :n_fit] @ a - y[n_fit:]) ** 2).mean())
        if err < best_err:
            best, best_err = lam, err
    alpha = np.linalg.solve(k + best * np.eye(len(x)), y)

    def apply(f: np.ndarray) -> np.ndarray:
        z = (f.reshape(len(f), -1).astype(np.float64) - mu) / scale
        pred = (z @ x.T / x.shape[1]) @ alpha + y_mu
        return np.clip(pred, 0, 1).reshape(len(f), *targets.shape[1:]).astype(np.float32)

    return apply


def _decoder(in_shape: tuple[int, ...], out_hw: tuple[int, int]) -> Any:
    """Conv decoder from C x h x w features to a 1 x H x W image in [0, 1]: a 1x1 projection,
    nearest upsampling in factor-2 steps with 3x3 convolutions, resize to the exact size."""
    import torch
    from torch import nn

    c, h, w = in_shape
    H, W = out_hw
    ch = 32  # small enough to train on two shared CPU cores
    layers: list[nn.Module] = [nn.Conv2d(c, ch, 1), nn.ReLU()]
    while h < H or w < W:
        sh, sw = (2 if h < H else 1), (2 if w < W else 1)
        out = 32 if h * sh * w * sw <= 64 * 64 else 16
        layers += [nn.Upsample(scale_factor=(sh, sw)), nn.Conv2d(ch, out, 3, padding=1), nn.ReLU()]
        ch, h, w = out, h * sh, w * sw
    layers += [nn.Conv2d(ch, 1, 3, padding=1)]

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            y = nn.functional.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)
            return torch.sigmoid(y)

    return Decoder()


def train_decoder(
    feats: np.ndarray, targets: np.ndarray, epochs: int, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit a decoder features -> targets (N x H x W in [0, 1]); the fitted map."""
    import torch

    torch.manual_seed(seed)
    scale = float(np.std(feats)) or 1.0  # features differ in scale by orders of magnitude
    model = _decoder(feats.shape[1:], targets.shape[1:])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy((feats / scale).astype(np.float32))
    y = torch.from_numpy(targets[:, None].astype(np.float32))
    n = len(x)
    steps = epochs * math.ceil(n / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()

    def apply(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xs = torch.from_numpy((f / scale).astype(np.float32))
            return np.concatenate([model(xs[i : i + 256]).numpy() for i in range(0, len(xs), 256)])[
                :, 0
            ]

    return apply


# -- workloads ---------------------------------------------------------------------------------
CONV_RELEASES = {"fmnist": ("raw", "codec", "dp_eps16384"), "ocr": ("raw", "codec")}
"""Releases the (CPU-costly) convolutional decoder attacks; the linear one attacks every release.
(On OCR, DP at every measured ε already leaves the tail unable to read the line: see
privacy_dp_accuracy.json.)"""

Attacker = tuple[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]]


def attackers(workload: str, release: str, epochs: int) -> list[Attacker]:
    out: list[Attacker] = [("ridge", fit_ridge)]
    if release in CONV_RELEASES[workload] and epochs > 0:
        out.append(("conv", lambda f, y: train_decoder(f, y, epochs, seed=0)))
    return out


def fmnist_leakage(n_train: int, n_test: int, epochs: int) -> list[dict[str, Any]]:
    from benchmarks.privacy._workloads import BUNDLE, _session

    train_x, _ = fmnist("train", n_train, seed=21)
    test_x, test_y = fmnist("test", n_test, seed=22)
    cal_x, _ = fmnist("validation", 1000, seed=23)
    full = _session(BUNDLE / "full.onnx")
    rows: list[dict[str, Any]] = []
    targets_train = train_x.astype(np.float32) / 255
    targets_test = test_x.astype(np.float32) / 255
    floor = np.broadcast_to(targets_train.mean(0), targets_test.shape)
    for cut in ("cut1", "cut2"):
        split = FmnistSplit(cut)
        clip = float(np.median(np.linalg.norm(split.features(cal_x).reshape(1000, -1), axis=1)))
        f_train, f_test = split.features(train_x), split.features(test_x)
        rows.append(_fmnist_row(cut, "floor", "-", floor, targets_test, test_y, full, split, 0.0))
        for name, release in releases(split.codec, FMNIST_EPS, clip).items():
            released_train, released_test = release(f_train, 1), release(f_test, 2)
            for attacker in attackers("fmnist", name, epochs):
                t = time.time()
                decoder = attacker[1](released_train, targets_train)
                recon = decoder(released_test)
                row = _fmnist_row(
                    cut, name, attacker[0], recon, targets_test, test_y, full, split, clip
                )
                rows.append(row)
                print(f"fmnist {cut} {name:>14} {attacker[0]:>5} PSNR {row['psnr_db']:.2f} "
                      f"SSIM {row['ssim']:.3f} top1(recon) {row['top1_on_reconstruction']:.3f} "
                      f"({time.time() - t:.0f} s)", flush=True)  # fmt: skip
    return rows


def _fmnist_row(
    cut: str, name: str, attacker: str, recon: np.ndarray, truth: np.ndarray, labels: np.ndarray,
    full: Any, split: FmnistSplit, clip: float,
) -> dict[str, Any]:  # fmt: skip
    images = np.clip(np.rint(recon * 255), 0, 255).astype(np.uint8)
    x = split.prepare(images)
    logits = np.concatenate(
        [
            full.run(None, {full.get_inputs()[0].name: x[i : i + 256]})[-1]
            for i in range(0, len(x), 256)
        ]
    )
    return {
        "workload": "fmnist", "cut": cut, "release": name, "attacker": attacker, "clip_norm": clip,
        "codec": split.codec if name == "codec" else "",
        "psnr_db": psnr(recon, truth), "ssim": ssim(recon, truth),
        "top1_on_reconstruction": float((logits.argmax(1) == labels).mean()),
    }  # fmt: skip


def ocr_leakage(n_train: int, n_test: int, epochs: int) -> list[dict[str, Any]]:
    train_lines, _ = render_lines(n_train, seed=31)
    test_lines, test_texts = render_lines(n_test, seed=32)
    cal_lines, _ = render_lines(200, seed=33)

    def gray(lines: np.ndarray) -> np.ndarray:  # recogniser input [-1, 1] -> [0, 1] gray
        return (lines.mean(1) + 1) / 2

    def as_input(img: np.ndarray) -> np.ndarray:  # and back, for the recogniser
        return np.repeat((img * 2 - 1)[:, None], 3, axis=1).astype(np.float32)

    t_train, t_test = gray(train_lines), gray(test_lines)
    floor = np.broadcast_to(t_train.mean(0), t_test.shape)
    rows: list[dict[str, Any]] = []
    for cut in ("backbone", "mid"):
        split = OcrSplit(cut)
        clip = float(np.median(np.linalg.norm(split.features(cal_lines).reshape(200, -1), axis=1)))
        f_train, f_test = split.features(train_lines), split.features(test_lines)
        candidates: dict[tuple[str, str], np.ndarray] = {
            ("floor", "-"): np.asarray(floor),
            ("input", "-"): t_test,
        }
        for name, release in releases(OCR_CODEC, OCR_EPS, clip).items():
            released_train, released_test = release(f_train, 1), release(f_test, 2)
            for attacker in attackers("ocr", name, epochs):
                t = time.time()
                decoder = attacker[1](released_train, t_train)
                candidates[(name, attacker[0])] = decoder(released_test)
                print(
                    f"ocr {cut} {name} {attacker[0]} fitted ({time.time() - t:.0f} s)", flush=True
                )
        for (name, attacker_name), recon in candidates.items():
            read = split.read_lines(as_input(np.asarray(recon)))
            exact = float(np.mean([r == t for r, t in zip(read, test_texts, strict=True)]))
            chars = 1 - float(
                np.mean([min(1.0, cer(r, t)) for r, t in zip(read, test_texts, strict=True)])
            )
            rows.append({
                "workload": "ocr", "cut": cut, "release": name, "attacker": attacker_name,
                "clip_norm": clip,
                "codec": OCR_CODEC if name == "codec" else "",
                "psnr_db": psnr(np.asarray(recon), t_test), "ssim": ssim(np.asarray(recon), t_test),
                "lines_read_exactly": exact, "chars_read": chars,
                "examples": [{"truth": t, "read": r} for t, r in zip(test_texts[:5], read[:5], strict=True)],
            })  # fmt: skip
            r = rows[-1]
            print(f"ocr {cut} {name:>14} {attacker_name:>5} PSNR {r['psnr_db']:.2f} "
                  f"SSIM {r['ssim']:.3f} exact {exact:.3f} chars {chars:.3f}", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, to check the pipeline")
    p.add_argument("--out", type=Path, default=RESULTS / "privacy_leakage.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sizes = (
        {"fm": (400, 60, 1), "ocr": (80, 16, 1)}
        if args.quick
        else {"fm": (2000, 600, 3), "ocr": (400, 120, 3)}
    )
    t0 = time.time()
    rows = fmnist_leakage(*sizes["fm"])
    _write(args.out, rows, sizes, t0, torch.__version__, partial=True)
    rows += ocr_leakage(*sizes["ocr"])
    _write(args.out, rows, sizes, t0, torch.__version__, partial=False)
    return 0


def _write(
    out: Path, rows: list[dict[str, Any]], sizes: dict[str, tuple[int, int, int]], t0: float,
    torch_version: str, partial: bool,
) -> None:  # fmt: skip
    doc = {
        "benchmark": "privacy_leakage",
        "command": "PYTHONPATH=.:generated/python:.venv/lib/python3.11/site-packages "
        "/tmp/venv-torch/bin/python -m benchmarks.privacy.leakage",
        "attacker": "ridge: linear kernel ridge (dual form, λ on a held-out fifth), every release; "
        "conv: 1x1 projection, nearest upsampling + 3x3 convs (32/16 channels), sigmoid, MSE, Adam "
        "with one-cycle lr 2e-3, batch 64, for the releases in CONV_RELEASES; both trained on "
        "released features of training inputs",
        "sizes": {
            k: dict(zip(("train", "test", "epochs"), v, strict=True)) for k, v in sizes.items()
        },
        "delta": DELTA,
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
        "machine": {**machine(), "torch": torch_version},
        "partial": partial,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out} ({doc['seconds']} s)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
