"""A Triton-layout model repository (``<name>/config.pbtxt`` + ``<name>/<int>/model.onnx``)
holding the PP-OCRv6 recogniser from the rapidocr wheel, served by the gateway and answered for
unchanged tritonclient with ``model_version="1"``: the lines it reads are the rendered text."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.frames import font_dir
from common.pipeline._ctc import charset_from_metadata, ctc_greedy
from common.pipeline._recognize import line_input
from common.settings import nest
from tests.support.tritonclient import run_script

SCRIPT = Path(__file__).with_name("_tc_triton_repo.py")
MODEL = "ppocr_v6_rec"
CONFIG = f"""
name: "{MODEL}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 3, 48, -1 ] }} ]
output [ {{ name: "fetch_name_0" data_type: TYPE_FP32 dims: [ -1, 18710 ] }} ]
version_policy {{ all {{ }} }}
dynamic_batching {{ max_queue_delay_microseconds: 500 }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""
TEXTS = ("LOT 4711-B", "Triton 2026")


def _recognizer() -> Path:
    spec = importlib.util.find_spec("rapidocr")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "models" / "PP-OCRv6_rec_small.onnx"


def _lines() -> np.ndarray:
    font = ImageFont.truetype(str(font_dir() / "DejaVuSans.ttf"), 28)
    rows = []
    for text in TEXTS:
        img = Image.new("RGB", (300, 48), "white")
        ImageDraw.Draw(img).text((8, 8), text, font=font, fill="black")
        rows.append(line_input(np.asarray(img), 48, 320))
    return np.stack(rows)


def _repository(root: Path) -> Path:
    model = root / MODEL
    for version in ("1", "2"):
        (model / version).mkdir(parents=True)
        (model / version / "model.onnx").symlink_to(_recognizer())
    (model / "config.pbtxt").write_text(CONFIG)
    return root


async def test_tritonclient_reads_lines_from_a_triton_repository_at_version_1(
    tmp_path: Path,
) -> None:
    x = _lines()
    session = ort.InferenceSession(str(_recognizer()))
    ref = session.run(None, {"x": x})[0]
    charset = charset_from_metadata(session.get_modelmeta().custom_metadata_map)
    settings = GatewaySettings(
        **nest(
            {
                "models_dir": _repository(tmp_path / "models"),
                "server.port": 0,
                "metrics.port": None,
                "tls.insecure": True,
            }
        )
    )
    async with Gateway(settings) as gw:
        np.save(tmp_path / "x.npy", x)
        args = {
            "url": f"127.0.0.1:{gw.port}",
            "model": MODEL,
            "x": str(tmp_path / "x.npy"),
            "y": str(tmp_path / "y.npy"),
        }
        out = await asyncio.to_thread(run_script, SCRIPT, args, timeout=120)
    assert out["ready"] == {"1": True, "2": True, "3": False}
    assert out["versions"] == ["1", "2"]
    assert out["config"] == {
        "name": MODEL,
        "platform": "onnxruntime_onnx",
        "max_batch_size": 8,
        "delay_us": 500,
        "policy": "all",
        "inputs": [["x", [3, 48, -1]]],
    }
    assert out["model_version"] == "1"
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    assert [ctc_greedy(p, charset).text for p in y] == list(TEXTS)
    assert [m for m in out["index"] if m[0] == MODEL] == [
        [MODEL, "1", "READY"],
        [MODEL, "2", "READY"],
    ]
    assert out["errors"]["3"].startswith("StatusCode.NOT_FOUND")
    assert "versions: 1, 2" in out["errors"]["3"]
    assert out["errors"]["v1"].startswith("StatusCode.NOT_FOUND")
