"""Encryption at rest for the Redis stores: a client wrapper that seals every value it writes
and opens every value it reads (AES-256-GCM under ``common.privacy.KeyRing``, bound to the Redis
key, so a value copied under another key fails), passing everything else through.

The idempotency store and the result cache use ``get``/``set``/``delete`` only, so wrapping their
client encrypts the results and outputs they keep without either of them knowing. A value that is
not sealed (written before encryption was switched on) or was sealed under a retired key reads as
DataLoss, never as plaintext.
"""

from __future__ import annotations

from typing import Any

from common.privacy import KeyRing


def _context(name: Any) -> bytes:
    return name if isinstance(name, bytes) else str(name).encode()


class SealedRedis:
    """``redis.asyncio.Redis``-like client whose values are sealed at rest."""

    def __init__(self, client: Any, ring: KeyRing) -> None:
        self._client = client
        self.ring = ring

    async def set(self, name: Any, value: bytes | str, *args: Any, **kwargs: Any) -> Any:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return await self._client.set(name, self.ring.seal(raw, _context(name)), *args, **kwargs)

    async def get(self, name: Any) -> bytes | None:
        value = await self._client.get(name)
        return None if value is None else self.ring.open(value, _context(name))

    async def delete(self, *names: Any) -> Any:
        return await self._client.delete(*names)

    async def aclose(self) -> None:
        await self._client.aclose()

    def __getattr__(self, item: str) -> Any:
        # Key-space commands (scan, ttl, exists...) touch no values; forward them.
        return getattr(self._client, item)


__all__ = ["SealedRedis"]
