"""HTTP content codings of request and response bodies (``Content-Encoding``/``Accept-Encoding``:
``gzip`` and ``deflate`` — zlib-wrapped, as tritonclient.http and Triton use them).

A compressed request body is inflated only up to the bridge's body limit: a small body that
inflates past it (a compression bomb) is refused without the rest ever being inflated.
"""

from __future__ import annotations

import zlib

from common.errors import InvalidArgument

CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""Supported codings and their zlib window bits (gzip header, zlib header)."""


def inflate(data: bytes, coding: str, limit: int) -> bytes | None:
    """``data`` decoded from ``coding``; None when it inflates past ``limit`` bytes."""
    wbits = CODINGS.get(coding)
    if wbits is None:
        raise InvalidArgument(
            f"Content-Encoding {coding[:32]!r} is not supported (gzip, deflate or identity)"
        )
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidArgument(f"body is not valid {coding}: {exc}") from None
    if len(out) > limit:
        return None
    if not d.eof:
        raise InvalidArgument(f"body is truncated {coding}")
    return out


MIN_COMPRESS_BYTES = 1024
"""Smaller answers go as they are: compressing them costs more than it saves."""


def deflate(data: bytes, accept_encoding: str) -> tuple[bytes, str | None]:
    """``data`` in the first coding the client accepts (with its name), or as it is (also when
    shorter than :data:`MIN_COMPRESS_BYTES`)."""
    if len(data) < MIN_COMPRESS_BYTES:
        return data, None
    accepted = [p.split(";")[0].strip().lower() for p in accept_encoding.split(",")]
    for coding in accepted:
        if coding == "gzip":
            c = zlib.compressobj(6, zlib.DEFLATED, CODINGS["gzip"])
            return c.compress(data) + c.flush(), "gzip"
        if coding == "deflate":
            return zlib.compress(data, 6), "deflate"
    return data, None


__all__ = ["CODINGS", "MIN_COMPRESS_BYTES", "deflate", "inflate"]
