"""Train the reference models on Fashion-MNIST and export them to ONNX (one command, seeded).

    .venv/bin/pip install -r requirements/train.txt
    .venv/bin/python models/train.py --out .cache/train         # CPU or CUDA, whichever is there
    .venv/bin/python models/build_bundles.py --train-out out/train  # split, calibrate, bundle

Two models:
  * ``fmnist_branchy``: three-stage residual CNN with two early exits (BranchyNet-style), exits
    trained jointly with a weighted loss (0.5, 0.5, 1.0).
  * ``fmnist_edge_small``: a small standalone CNN for edge/cloud cascades.

Recipe: SGD + Nesterov (momentum 0.9, weight decay 5e-4), OneCycle to lr 0.1, batch 128,
random crop (pad 2) + horizontal flip, fixed epochs. The split comes from common.data
(train 55,000 / validation 5,000 / test 10,000). On CUDA exact bit-reproducibility is not
guaranteed (cuDNN kernels), seeds are fixed everywhere.

Outputs in --out: ``<model>.pt`` (state dict), ``<model>.onnx`` (backbone exported with outputs
exit1_logits, exit2_logits, logits, cut1, cut2; edge model with logits), ``train_log.json``.
This is the only module of the project that imports torch; training never runs in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.data import load_fashion_mnist

MEAN, STD = 0.2860, 0.3530
EXIT_WEIGHTS = (0.5, 0.5, 1.0)


def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(x + self.b2(self.c2(y)))


def head(cin: int, hidden: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        cbr(cin, hidden, stride), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 10)
    )


class Branchy(nn.Module):
    """stage1 -> cut1 (w×14×14) -> stage2 -> cut2 (2w×7×7) -> stage3 -> logits; exits on cuts."""

    def __init__(self, w: int = 32) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(cbr(1, w), ResBlock(w), nn.MaxPool2d(2))
        self.exit1 = nn.Sequential(cbr(w, 2 * w, 2), head(2 * w, 2 * w))
        self.stage2 = nn.Sequential(cbr(w, 2 * w), ResBlock(2 * w), nn.MaxPool2d(2))
        self.exit2 = head(2 * w, 4 * w)
        self.stage3 = nn.Sequential(
            cbr(2 * w, 4 * w), ResBlock(4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(0.1), nn.Linear(4 * w, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        return self.exit1(f1), self.exit2(f2), self.stage3(f2), f1, f2


class EdgeSmall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            cbr(1, 24), nn.MaxPool2d(2), cbr(24, 48), nn.MaxPool2d(2), cbr(48, 96), cbr(96, 96),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.array(images)).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.unsqueeze(1).to(device)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop (zero-padding 2 in normalised space) and horizontal flip."""
    n = x.shape[0]
    pad = F.pad(x, (2, 2, 2, 2), value=-MEAN / STD)
    oy = torch.randint(0, 5, (n,), generator=gen, device="cpu").to(x.device)
    ox = torch.randint(0, 5, (n,), generator=gen, device="cpu").to(x.device)
    ar = torch.arange(28, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = (ox[:, None] + ar)[:, None, :]
    out = pad[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
    flip = torch.rand(n, generator=gen, device="cpu").to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    model.eval()
    correct: list[int] | None = None
    for i in range(0, x.shape[0], 1000):
        outs = model(x[i : i + 1000])
        logits = outs[:3] if isinstance(outs, tuple) else (outs,)
        hits = [int((lg.argmax(1) == y[i : i + 1000]).sum()) for lg in logits]
        correct = hits if correct is None else [a + b for a, b in zip(correct, hits, strict=True)]
    assert correct is not None
    return [c / x.shape[0] for c in correct]


def train(
    name: str,
    model: nn.Module,
    data: dict[str, tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    seed: int,
    device: torch.device,
) -> dict[str, object]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).to(memory_format=torch.channels_last)
    xtr, ytr = data["train"]
    bs = 128
    steps = math.ceil(xtr.shape[0] / bs)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, epochs=epochs, steps_per_epoch=steps
    )
    params = sum(p.numel() for p in model.parameters())
    print(f"[{name}] {params / 1e6:.3f}M params, {epochs} epochs, {steps} steps/epoch", flush=True)
    history = []
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen).to(device)
        total = 0.0
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            xb = augment(xtr[idx], gen).contiguous(memory_format=torch.channels_last)
            yb = ytr[idx]
            outs = model(xb)
            if isinstance(outs, tuple):
                loss = sum(
                    w * F.cross_entropy(o, yb) for w, o in zip(EXIT_WEIGHTS, outs[:3], strict=True)
                )
            else:
                loss = F.cross_entropy(outs, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            total += float(loss.detach()) if s % 50 == 0 else 0.0
        val = evaluate(model, *data["validation"])
        history.append({"epoch": epoch + 1, "val": val, "seconds": round(time.time() - t0, 1)})
        print(f"[{name}] epoch {epoch + 1}/{epochs} val {' '.join(f'{v:.4f}' for v in val)} "
              f"({time.time() - t0:.0f}s)", flush=True)  # fmt: skip
    result = {
        "params": params,
        "epochs": epochs,
        "seconds": round(time.time() - t0, 1),
        "val": evaluate(model, *data["validation"]),
        "test": evaluate(model, *data["test"]),
        "history": history,
    }
    print(f"[{name}] test {result['test']}", flush=True)
    return result


class _Export(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inner(x)  # type: ignore[no-any-return]


def export_onnx(model: nn.Module, path: Path, branchy: bool) -> None:
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    wrapper = _Export(model).eval()
    outputs = ["exit1_logits", "exit2_logits", "logits", "cut1", "cut2"] if branchy else ["logits"]
    dyn = {n: {0: "batch"} for n in ["input", *outputs]}
    x = torch.zeros(2, 1, 28, 28)
    torch.onnx.export(
        wrapper, (x,), str(path), input_names=["input"], output_names=outputs,
        dynamic_axes=dyn, opset_version=17, do_constant_folding=True, dynamo=False,
    )  # fmt: skip
    print(f"exported {path} ({path.stat().st_size} bytes)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/train"))
    ap.add_argument("--data", type=Path, default=None, help="IDX directory (else common.data)")
    ap.add_argument("--epochs", type=int, default=40, help="backbone epochs")
    ap.add_argument("--edge-epochs", type=int, default=30)
    ap.add_argument("--widths", default="32", help="backbone widths to train, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument(
        "--time-budget", type=float, default=0.0, help="skip further models past this (s)"
    )
    ap.add_argument("--smoke", action="store_true", help="1 epoch on 2,000 images (plumbing check)")
    ap.add_argument("--no-export", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print(f"torch {torch.__version__} on {device}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split in ("train", "validation", "test"):
        images, labels = load_fashion_mnist(split, args.data)  # type: ignore[arg-type]
        if args.smoke:
            images, labels = images[:2000], labels[:2000]
        data[split] = (to_tensor(images, device), torch.from_numpy(labels).to(device))
    epochs, edge_epochs = (1, 1) if args.smoke else (args.epochs, args.edge_epochs)
    log: dict[str, object] = {"torch": torch.__version__, "device": str(device), "seed": args.seed,
                              "mean": MEAN, "std": STD, "exit_weights": EXIT_WEIGHTS, "models": {}}  # fmt: skip
    models: dict[str, object] = log["models"]  # type: ignore[assignment]
    t_start = time.time()
    jobs: list[tuple[str, nn.Module, int, bool]] = [
        ("fmnist_edge_small", EdgeSmall(), edge_epochs, False)
    ]
    for w in (int(s) for s in args.widths.split(",")):
        jobs.append((f"fmnist_branchy_w{w}", Branchy(w), epochs, True))
    last_seconds = 0.0
    for name, model, ep, branchy in jobs:
        elapsed = time.time() - t_start
        if args.time_budget and elapsed + last_seconds * 1.6 > args.time_budget and models:
            print(
                f"[{name}] skipped: {elapsed:.0f}s used of a {args.time_budget:.0f}s budget",
                flush=True,
            )
            continue
        res = train(name, model, data, ep, args.seed, device)
        last_seconds = float(res["seconds"])  # type: ignore[arg-type]
        models[name] = res
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
        if not args.no_export:
            try:
                export_onnx(model, args.out / f"{name}.onnx", branchy)
            except Exception as exc:  # export problems must not lose the trained weights
                print(f"[{name}] ONNX export failed: {exc!r}", flush=True)
    print(f"done in {time.time() - t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
