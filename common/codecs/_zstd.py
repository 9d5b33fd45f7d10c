"""zstd entropy stage: model-free compression of the whole payload (zstandard, lazy import)."""

from __future__ import annotations

from common.codecs import _registry
from common.errors import CodecError


def compress(payload: bytes, level: int) -> bytes:
    """One zstd frame holding ``payload``."""
    return bytes(_registry.zstandard().ZstdCompressor(level=level).compress(payload))


def decompress(data: memoryview, bound: int) -> memoryview:
    """Decompress at most ``bound`` bytes; a frame declaring more is refused before decoding."""
    zstd = _registry.zstandard()
    declared = zstd.frame_content_size(bytes(data[:18]))
    if declared > bound:
        raise CodecError(f"zstd payload declares {declared} bytes; at most {bound} possible")
    # max_output_size only bounds frames without a declared content size, hence the check above
    return memoryview(zstd.ZstdDecompressor().decompress(bytes(data), max_output_size=bound))


__all__ = ["compress", "decompress"]
