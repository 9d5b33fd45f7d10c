"""``make demo`` for the OCR workload (``python -m benchmarks.e2e.demo --workload ocr``): a few
devices (a phone and an IoT-class device) read hard frames through the gateway over a 4G-like
link, the KPI table per system is printed, and every frame a device read is written as a PNG
overlay: each line's box and text coloured by where it was answered.

Colours: device (green), region read by the cloud (blue), whole frame read by the cloud
(purple), deferred while offline (orange), replayed after the link returned (cyan), cloud failed
and the device's reading kept (red). A struck-through grey text beside a cloud line is what the
device had read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {
    "edge": (40, 170, 60),
    "region": (30, 100, 230),
    "frame": (150, 60, 200),
    "deferred": (240, 140, 20),
    "replayed": (0, 180, 200),
    "edge_fallback": (220, 30, 30),
}


def _font(size: int) -> Any:
    from common.frames._render import font_dir

    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf"):
        path = font_dir() / name
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default()


def overlay(image_path: Path, answers: list[dict[str, Any]], out: Path) -> Path:
    """Draw ``answers`` (the device's JSON: text, edge_text, route, box) over the frame."""
    img = Image.open(image_path).convert("RGB")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    for a in answers:
        colour = COLOURS.get(a["route"], (0, 0, 0))
        pts = [tuple(p) for p in a["box"]]
        draw.polygon(pts, outline=colour, width=3)
        x = min(p[0] for p in pts)
        y = max(p[1] for p in pts) + 2
        label = f"{a['text']}  [{a['route']}]"
        box = draw.textbbox((x, y), label, font=font)
        draw.rectangle(box, fill=(255, 255, 255))
        draw.text((x, y), label, fill=colour, font=font)
        if a.get("edge_text") and a["edge_text"] != a["text"]:
            draw.text(
                (x, box[3] + 1), f"device: {a['edge_text']}", fill=(120, 120, 120), font=small
            )
    legend = "  ".join(COLOURS)
    draw.rectangle((0, 0, 12 + 8 * len(legend), 22), fill=(255, 255, 255))
    x = 6
    for route, colour in COLOURS.items():
        draw.text((x, 3), route, fill=colour, font=small)
        x += int(draw.textlength(route, font=small)) + 14
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def overlays(report: dict[str, Any], frames_json: Path, out_dir: Path) -> list[Path]:
    """One PNG per (cell, device, frame) of a fleet report."""
    root = frames_json.parent
    files = {f["id"]: f["file"] for f in json.loads(frames_json.read_text())["frames"]}
    written = []
    for cell in report["cells"]:
        for dev in cell["devices"]:
            for f in dev["frames"]:
                name = f"{cell['link']}-{cell['system']}-{dev['device_id']}-{f['id']}.png"
                written.append(overlay(root / files[f["id"]], f["answers"], out_dir / name))
    return written


def run(out: Path, frames: int = 2, link: str = "4g") -> int:
    """The demo: a small fleet (edge, cloud, hybrid), its table, overlays under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    report_path = out / "ocr_fleet.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.ocr.fleet", "--devices", "2", "--frames", str(frames),
         "--frame-pool", str(2 * frames), "--links", link, "--interval", "3",
         "--work", str(work), "--out", str(report_path)],
        check=True, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(report_path.read_text())
    written = overlays(report, work / "frames" / "hard" / "frames.json", out / "overlays")
    print(f"\nreport: {report_path}\noverlays: {len(written)} PNGs in {out / 'overlays'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "demo-ocr"))
