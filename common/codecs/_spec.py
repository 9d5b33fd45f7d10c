"""Codec specs: the short text form ("clip:p99.9|q4|sparse:bitmap|ans") and its parsed dataclasses.

Grammar (see docs/codecs.md)::

    spec   := stage ("|" stage)*
    stage  := name [":" arg ("," arg)*]
    arg    := value | key "=" value

Stages appear in this order, each at most once: ``[clip] [raw|f16|int8|qN] [sparse] [ans|range|zstd]``.
When no value stage is given, ``raw`` is implied. ``ans``/``range`` need a quantiser (``int8``/``qN``).
"""

from __future__ import annotations

import dataclasses
import enum
import math

from common.errors import CodecError


class StageKind(enum.Enum):
    """What one pipeline stage does. Values are the names used in spec text."""

    CLIP = "clip"
    RAW = "raw"
    FLOAT16 = "f16"
    QUANTIZE = "q"
    SPARSIFY = "sparse"
    ANS = "ans"
    RANGE = "range"
    ZSTD = "zstd"


class ClipMethod(enum.Enum):
    """How a clip stage chooses its range."""

    PERCENTILE = "percentile"  # per tensor, at a percentile of the values
    MSE = "mse"  # per tensor, minimising quantisation MSE for the following bit width
    FIXED = "fixed"  # a fixed range, usually calibrated offline from activation statistics


class SparseIndex(enum.Enum):
    """How the positions of non-zero values are stored."""

    BITMAP = "bitmap"
    RUN_LENGTH = "rle"


VALUE_KINDS = frozenset({StageKind.RAW, StageKind.FLOAT16, StageKind.QUANTIZE})
ENTROPY_KINDS = frozenset({StageKind.ANS, StageKind.RANGE, StageKind.ZSTD})
_ORDER = {
    StageKind.CLIP: 0,
    StageKind.RAW: 1,
    StageKind.FLOAT16: 1,
    StageKind.QUANTIZE: 1,
    StageKind.SPARSIFY: 2,
    StageKind.ANS: 3,
    StageKind.RANGE: 3,
    StageKind.ZSTD: 3,
}
DEFAULT_ZSTD_LEVEL = 3


@dataclasses.dataclass(frozen=True)
class CodecStage:
    """One step of a codec pipeline; each kind reads only its own fields (mirrors the proto)."""

    kind: StageKind
    # QUANTIZE: bit width 2..8; per-channel parameters along axis 1 (axis 0 for 1-D tensors).
    bits: int = 0
    per_channel: bool = False
    # QUANTIZE: companding exponent; sign(x)*|x|**gamma is quantised (gamma < 1 puts more levels
    # near zero). A multiple of 0.01 in [0.1, 2.55]; 1 means plain affine quantisation.
    gamma: float = 1.0
    # CLIP: method and its parameter (percentile, or the fixed range).
    clip_method: ClipMethod | None = None
    clip_percentile: float = 0.0
    clip_min: float = 0.0
    clip_max: float = 0.0
    # SPARSIFY: zero |x| < threshold, or keep the keep_fraction largest |x| (0 = use threshold).
    sparse_index: SparseIndex = SparseIndex.BITMAP
    threshold: float = 0.0
    keep_fraction: float = 0.0
    # ZSTD: compression level.
    level: int = DEFAULT_ZSTD_LEVEL

    def __str__(self) -> str:
        return _format_stage(self)


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    """A codec pipeline applied left to right. ``str(spec)`` is its canonical text form."""

    stages: tuple[CodecStage, ...]

    def __post_init__(self) -> None:
        _validate(self.stages)

    @classmethod
    def parse(cls, text: str) -> CodecSpec:
        """Parse spec text such as ``"clip:p99.9|q4|ans"``; raises CodecError naming the problem."""
        return parse_spec(text)

    def __str__(self) -> str:
        return "|".join(_format_stage(s) for s in self.stages)

    def stage(self, kind: StageKind) -> CodecStage | None:
        """The stage of that kind, if present."""
        return next((s for s in self.stages if s.kind is kind), None)

    @property
    def clip(self) -> CodecStage | None:
        return self.stage(StageKind.CLIP)

    @property
    def value(self) -> CodecStage:
        """The value stage (raw, f16 or quantiser); always present."""
        return next(s for s in self.stages if s.kind in VALUE_KINDS)

    @property
    def sparse(self) -> CodecStage | None:
        return self.stage(StageKind.SPARSIFY)

    @property
    def entropy(self) -> CodecStage | None:
        """The final entropy stage (ans, range or zstd), if present."""
        return next((s for s in self.stages if s.kind in ENTROPY_KINDS), None)

    @property
    def bits(self) -> int:
        """Quantiser bit width, or 0 when the values are not quantised."""
        return self.value.bits if self.value.kind is StageKind.QUANTIZE else 0

    @property
    def lossless(self) -> bool:
        """True when decoding returns the input exactly (for any input the spec accepts)."""
        sp = self.sparse
        return (
            self.clip is None
            and self.value.kind is StageKind.RAW
            and (sp is None or (sp.threshold == 0.0 and sp.keep_fraction == 0.0))
        )

    @property
    def needs_entropy_model(self) -> bool:
        """True when the spec codes symbols with a probability model (ans or range)."""
        e = self.entropy
        return e is not None and e.kind in (StageKind.ANS, StageKind.RANGE)


def _num(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _format_stage(s: CodecStage) -> str:
    k = s.kind
    if k is StageKind.QUANTIZE:
        name = "int8" if s.bits == 8 else f"q{s.bits}"
        args = (["per_channel"] if s.per_channel else []) + (
            [f"pow={_num(s.gamma)}"] if s.gamma != 1.0 else []
        )
        return name + (":" + ",".join(args) if args else "")
    if k is StageKind.CLIP:
        if s.clip_method is ClipMethod.PERCENTILE:
            return f"clip:p{_num(s.clip_percentile)}"
        if s.clip_method is ClipMethod.MSE:
            return "clip:mse"
        return f"clip:{_num(s.clip_min)},{_num(s.clip_max)}"
    if k is StageKind.SPARSIFY:
        text = f"sparse:{s.sparse_index.value}"
        if s.keep_fraction:
            text += f",top={_num(s.keep_fraction)}"
        elif s.threshold:
            text += f",thr={_num(s.threshold)}"
        return text
    if k is StageKind.ZSTD and s.level != DEFAULT_ZSTD_LEVEL:
        return f"zstd:{s.level}"
    return k.value


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CodecError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise CodecError(f"{what}: {text!r} is not finite")
    return value


def _parse_stage(text: str) -> CodecStage:
    name, _, argtext = text.strip().partition(":")
    name = name.strip().lower()
    args = [a.strip() for a in argtext.split(",")] if argtext else []
    if any(not a for a in args):
        raise CodecError(f"codec stage {text!r}: empty argument")
    where = f"codec stage {text!r}"
    if name in ("int8", "q8") or (len(name) == 2 and name[0] == "q" and name[1].isdigit()):
        bits = 8 if name == "int8" else int(name[1])
        if not 2 <= bits <= 8:
            raise CodecError(f"{where}: bit width must be 2..8")
        per_channel, gamma = False, 1.0
        for arg in args:
            if arg in ("per_channel", "per_tensor"):
                per_channel = arg == "per_channel"
            elif arg.startswith("pow="):
                gamma = _float(arg[4:], where)
                if not 0.1 <= gamma <= 2.55 or abs(gamma * 100 - round(gamma * 100)) > 1e-9:
                    raise CodecError(f"{where}: pow must be a multiple of 0.01 in [0.1, 2.55]")
                gamma = round(gamma * 100) / 100
            else:
                raise CodecError(f"{where}: expected per_channel, per_tensor or pow=G arguments")
        return CodecStage(StageKind.QUANTIZE, bits=bits, per_channel=per_channel, gamma=gamma)
    if name == "clip":
        if args == ["mse"]:
            return CodecStage(StageKind.CLIP, clip_method=ClipMethod.MSE)
        if len(args) == 1 and args[0].startswith("p"):
            pct = _float(args[0][1:], where)
            if not 50.0 <= pct <= 100.0:
                raise CodecError(f"{where}: percentile must be in [50, 100]")
            return CodecStage(
                StageKind.CLIP, clip_method=ClipMethod.PERCENTILE, clip_percentile=pct
            )
        if len(args) == 2:
            lo, hi = _float(args[0], where), _float(args[1], where)
            if not lo <= 0.0 <= hi or lo == hi:
                raise CodecError(f"{where}: fixed range must satisfy min <= 0 <= max, min < max")
            return CodecStage(
                StageKind.CLIP, clip_method=ClipMethod.FIXED, clip_min=lo, clip_max=hi
            )
        raise CodecError(f"{where}: expected clip:pPCT, clip:mse or clip:MIN,MAX")
    if name == "sparse":
        index, thr, top = SparseIndex.BITMAP, 0.0, 0.0
        for arg in args:
            key, eq, val = arg.partition("=")
            if not eq and key in ("bitmap", "rle"):
                index = SparseIndex(key)
            elif key == "thr" and eq:
                thr = _float(val, where)
                if thr < 0:
                    raise CodecError(f"{where}: threshold must be >= 0")
            elif key == "top" and eq:
                top = _float(val, where)
                if not 0.0 < top <= 1.0:
                    raise CodecError(f"{where}: top fraction must be in (0, 1]")
            else:
                raise CodecError(f"{where}: unknown argument {arg!r} (bitmap, rle, thr=T, top=F)")
        if thr and top:
            raise CodecError(f"{where}: give thr= or top=, not both")
        return CodecStage(StageKind.SPARSIFY, sparse_index=index, threshold=thr, keep_fraction=top)
    if name == "zstd":
        if len(args) > 1 or (args and not args[0].lstrip("-").isdigit()):
            raise CodecError(f"{where}: expected zstd or zstd:LEVEL")
        level = int(args[0]) if args else DEFAULT_ZSTD_LEVEL
        if not -7 <= level <= 22:
            raise CodecError(f"{where}: zstd level must be -7..22")
        return CodecStage(StageKind.ZSTD, level=level)
    simple = {"raw": StageKind.RAW, "f16": StageKind.FLOAT16, "ans": StageKind.ANS}
    simple["range"] = StageKind.RANGE
    if name in simple:
        if args:
            raise CodecError(f"{where}: takes no arguments")
        return CodecStage(simple[name])
    raise CodecError(
        f"{where}: unknown codec {name!r} (raw, f16, int8, q2..q7, clip, sparse, ans, range, zstd)"
    )


def _validate(stages: tuple[CodecStage, ...]) -> None:
    if not stages:
        raise CodecError("codec spec is empty")
    order = [_ORDER[s.kind] for s in stages]
    if order != sorted(order) or len(set(order)) != len(order):
        text = "|".join(_format_stage(s) for s in stages)
        raise CodecError(
            f"codec spec {text!r}: stages must appear once each in the order "
            "clip, raw|f16|int8|qN, sparse, ans|range|zstd"
        )
    if not any(s.kind in VALUE_KINDS for s in stages):
        raise CodecError("codec spec has no value stage (raw, f16, int8 or qN)")
    value = next(s for s in stages if s.kind in VALUE_KINDS)
    entropy = next((s for s in stages if s.kind in ENTROPY_KINDS), None)
    if (
        entropy is not None
        and entropy.kind in (StageKind.ANS, StageKind.RANGE)
        and value.kind is not StageKind.QUANTIZE
    ):
        raise CodecError(
            f"codec spec: {entropy.kind.value} codes quantised symbols; add int8 or qN before it "
            "(or use zstd)"
        )


def parse_spec(text: str) -> CodecSpec:
    """Parse codec spec text (see the module docstring); raises CodecError naming the problem."""
    if not isinstance(text, str) or not text.strip():
        raise CodecError("codec spec is empty")
    if len(text) > 256:
        raise CodecError(f"codec spec is too long ({len(text)} characters, at most 256)")
    stages = [_parse_stage(part) for part in text.split("|")]
    if not any(s.kind in VALUE_KINDS for s in stages):
        # No value stage given: raw values are implied, placed after an optional clip.
        at = 1 if stages and stages[0].kind is StageKind.CLIP else 0
        stages.insert(at, CodecStage(StageKind.RAW))
    return CodecSpec(tuple(stages))


__all__ = [
    "ENTROPY_KINDS",
    "VALUE_KINDS",
    "ClipMethod",
    "CodecSpec",
    "CodecStage",
    "SparseIndex",
    "StageKind",
    "parse_spec",
]
