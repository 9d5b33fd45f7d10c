"""``aiml021 ocr --redact-pii``: personal data the recogniser reads never reaches the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from common.cli import build_parser
from common.frames._render import font_dir


def _frame(path: Path, lines: list[str]) -> None:
    img = Image.new("RGB", (1280, 720), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(str(font_dir() / "DejaVuSans.ttf"), 48)
    for i, text in enumerate(lines):
        draw.text((60, 80 + 140 * i), text, font=font, fill=(0, 0, 0))
    img.save(path)


def test_read_text_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = tmp_path / "label.png"
    _frame(frame, ["Contact bob@example.com", "Call +44 20 7946 0958", "LOT A1234"])
    argv = ["ocr", str(frame), "--json", "--redact-pii"]
    args = build_parser(argv).parse_args(argv)
    assert args.func(args) == 0
    texts = [ln["text"] for ln in json.loads(capsys.readouterr().out)["lines"]]
    joined = " ".join(texts)
    assert "[EMAIL]" in joined and "[PHONE]" in joined, texts
    assert "bob@example.com" not in joined and "7946" not in joined
    assert any("A1234" in t for t in texts)  # the rest is left as read
