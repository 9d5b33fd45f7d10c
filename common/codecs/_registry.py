"""Codec registry: wire ids and versions of the stages that appear in frames, and lazy imports.

Wire ids equal ``aiml021.common.v1.CodecKind`` numbers. A stage's version changes whenever its
frame parameters or payload layout change; decoders refuse versions they do not know.
Optional dependencies (constriction, zstandard; extra ``codecs``) are imported on first use so
that frames which do not need them decode without them.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from common.codecs._spec import StageKind
from common.errors import CodecError

# kind -> (wire id, current version). CLIP has no wire id: it only shapes the quantiser range.
STAGES: dict[StageKind, tuple[int, int]] = {
    StageKind.RAW: (1, 1),
    StageKind.FLOAT16: (2, 1),
    StageKind.QUANTIZE: (3, 1),
    StageKind.SPARSIFY: (4, 1),
    StageKind.ANS: (5, 1),
    StageKind.RANGE: (6, 1),
    StageKind.ZSTD: (7, 1),
}
KIND_BY_ID: dict[int, StageKind] = {wire: kind for kind, (wire, _) in STAGES.items()}


def wire_id(kind: StageKind) -> int:
    """The frame id of a stage kind."""
    return STAGES[kind][0]


def kind_for_id(wire: int, version: int) -> StageKind:
    """The stage kind of a frame record; CodecError for unknown ids or unsupported versions."""
    kind = KIND_BY_ID.get(wire)
    if kind is None:
        raise CodecError(f"frame names unknown codec id {wire} (known: {sorted(KIND_BY_ID)})")
    supported = STAGES[kind][1]
    if version != supported:
        raise CodecError(
            f"frame uses codec {kind.value!r} version {version}; this build decodes version "
            f"{supported} only"
        )
    return kind


@functools.cache
def _optional(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CodecError(
            f"codec needs the optional package {package!r}; install the 'codecs' extra "
            f"(pip install 'aiml021[codecs]'): {exc}"
        ) from exc


def constriction() -> ModuleType:
    """The constriction module (ANS and range coders), imported on first use."""
    return _optional("constriction", "constriction")


def zstandard() -> ModuleType:
    """The zstandard module, imported on first use."""
    return _optional("zstandard", "zstandard")


__all__ = ["KIND_BY_ID", "STAGES", "constriction", "kind_for_id", "wire_id", "zstandard"]
