"""Tenant isolation of what the gateway keeps: result-cache entries are shared within an org and
never across orgs; idempotency keys (and the answers they replay) belong to one principal of one
org, so a key another device or tenant sent first is simply a different key.

Namespaces are short digests of the org (and subject), so a namespaced key stays within the
stores' key limits whatever the org is called.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from cloud.core._hooks import CacheEntry, ResultCache
from cloud.core._principal import Principal, current_principal
from common.errors import InvalidArgument

MAX_CLIENT_KEY_LENGTH = 256
"""Longest idempotency key or cache model name a client may send (before namespacing)."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def org_namespace(principal: Principal) -> str:
    """Prefix of every result-cache key of ``principal``'s org."""
    return f"o:{_digest(principal.org)}"


def principal_namespace(principal: Principal) -> str:
    """Prefix of what belongs to one principal of one org."""
    return f"p:{_digest(principal.org, principal.subject)}"


def idempotency_key(principal: Principal, key: str) -> str:
    """The store key of a client's idempotency ``key``: scoped to the principal and its org."""
    if not key or len(key) > MAX_CLIENT_KEY_LENGTH:
        raise InvalidArgument(f"idempotency key must be 1..{MAX_CLIENT_KEY_LENGTH} characters")
    return f"{principal_namespace(principal)}/{key}"


def check_payload_digest(digest: bytes, payload: bytes) -> None:
    """InvalidArgument unless ``digest`` (when the client sent one) is the SHA-256 of
    ``payload``: the digest an idempotency key is bound to must be the payload's own."""
    if digest and hashlib.sha256(payload).digest() != digest:
        raise InvalidArgument(
            "payload_digest is not the SHA-256 of the payload received; "
            "send the digest of the exact payload bytes"
        )


@runtime_checkable
class CacheOwnerIndex(Protocol):
    """A shared cache that records which principals wrote or read each entry, so that one
    device's entries can be erased from a cache its org shares (right to erasure)."""

    async def note_owner(
        self,
        owner: str,
        model_name: str,
        content_hash: str,
        ttl_s: float | None = None,
        stored_at: float = 0.0,
    ) -> None:
        """Record that ``owner`` (a :func:`principal_namespace`) wrote or read the entry stored
        at ``stored_at`` (``CacheEntry.stored_at``: tells one entry from a later one)."""
        ...


class OrgScopedCache:
    """A :class:`ResultCache` whose keys are prefixed with the current principal's org: the data
    plane, CacheService and the REST bridge all see only their own org's entries.

    ``per_principal``: results are private to the principal that computed them (no device of
    the org reads another's cached answer, at the price of cross-device hits).
    """

    def __init__(self, inner: ResultCache, *, per_principal: bool = False) -> None:
        self.inner = inner
        self.per_principal = per_principal
        # An entry the org shares is also the data of every device that sent its content:
        # the cache remembers who, so that forgetting one of them finds it (per-principal
        # entries carry their owner in the key already).
        self._owners = inner if not per_principal and isinstance(inner, CacheOwnerIndex) else None

    def _model(self, model_name: str) -> str:
        if not model_name or len(model_name) > MAX_CLIENT_KEY_LENGTH:
            raise InvalidArgument(f"model_name must be 1..{MAX_CLIENT_KEY_LENGTH} characters")
        p = current_principal()
        space = principal_namespace(p) if self.per_principal else org_namespace(p)
        return f"{space}/{model_name}"

    async def get(self, model_name: str, content_hash: str) -> CacheEntry | None:
        key = self._model(model_name)
        entry = await self.inner.get(key, content_hash)
        if entry is not None:
            await self._note_owner(key, content_hash, None, entry.stored_at)
        return entry

    async def put(
        self, model_name: str, content_hash: str, entry: CacheEntry, ttl_s: float | None = None
    ) -> None:
        key = self._model(model_name)
        await self.inner.put(key, content_hash, entry, ttl_s)
        await self._note_owner(key, content_hash, ttl_s, entry.stored_at)

    async def _note_owner(
        self, key: str, content_hash: str, ttl_s: float | None, stored_at: float
    ) -> None:
        if self._owners is not None:
            owner = principal_namespace(current_principal())
            await self._owners.note_owner(owner, key, content_hash, ttl_s, stored_at)

    async def close(self) -> None:
        await self.inner.close()


__all__ = [
    "MAX_CLIENT_KEY_LENGTH",
    "CacheOwnerIndex",
    "OrgScopedCache",
    "check_payload_digest",
    "idempotency_key",
    "org_namespace",
    "principal_namespace",
]
