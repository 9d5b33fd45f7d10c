"""Label-like strings for rendered frames: serial and part numbers, dates, meter readings, words.

Every string uses characters that both PP-OCR dictionaries know (ASCII letters, digits and a few
separators), so a reader that is right can be exactly right.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

__all__ = ["KINDS", "label_text"]

_UPPER = string.ascii_uppercase
_DIGITS = string.digits
_WORDS = (
    "PASS", "FRAGILE", "QC OK", "BATCH", "Made in EU", "KEEP DRY", "THIS SIDE UP", "Inspected",
    "Handle with care", "Model", "Output", "Input", "Warning", "Voltage", "Serial", "Station",
    "Line", "Dock", "Zone", "Bay", "Rack", "Shelf", "Pallet", "Sample", "Return", "Express",
)  # fmt: skip
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _serial(rng: random.Random) -> str:
    body = f"{_chars(rng, _DIGITS, 4)}-{_chars(rng, _UPPER + _DIGITS, rng.randint(3, 5))}"
    return rng.choice(("SN ", "S/N ", "SN: ", "")) + body


def _part(rng: random.Random) -> str:
    groups = "-".join(_chars(rng, _DIGITS, k) for k in (2, 4, 2))
    return rng.choice(("P/N ", "PN ", "Part ", "REF ")) + groups + rng.choice(("", "", "A", "B"))


def _date(rng: random.Random) -> str:
    y, m, d = rng.randint(2019, 2031), rng.randint(1, 12), rng.randint(1, 28)
    form = rng.randrange(4)
    if form == 0:
        text = f"{y:04d}-{m:02d}-{d:02d}"
    elif form == 1:
        text = f"{d:02d}.{m:02d}.{y:04d}"
    elif form == 2:
        text = f"{d:02d} {_MONTHS[m - 1]} {y:04d}"
    else:
        text = f"{m:02d}/{y % 100:02d}"
    return rng.choice(("EXP ", "MFD ", "Date ", "BEST BEFORE ", "")) + text


def _meter(rng: random.Random) -> str:
    value = f"{rng.randint(0, 99999):05d}.{rng.randint(0, 9)}"
    return value + rng.choice((" kWh", " m3", " L", " V", " A", " bar", ""))


def _lot(rng: random.Random) -> str:
    return rng.choice(("LOT ", "Batch ", "L")) + _chars(rng, _UPPER, 1) + _chars(rng, _DIGITS, 4)


def _word(rng: random.Random) -> str:
    return rng.choice(_WORDS)


KINDS: dict[str, Callable[[random.Random], str]] = {
    "serial": _serial,
    "part": _part,
    "date": _date,
    "meter": _meter,
    "lot": _lot,
    "word": _word,
}
"""Kind of label line -> generator of one string."""


def label_text(rng: random.Random) -> tuple[str, str]:
    """One label-like line: ``(kind, text)``."""
    kind = rng.choice(tuple(KINDS))
    return kind, KINDS[kind](rng)
