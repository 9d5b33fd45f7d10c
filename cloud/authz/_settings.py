"""Settings section ``authz``: token verification, tenant defaults, which orgs each model is
served to, and the audit trail's key."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.settings import Section


class AuthzSettings(Section):
    """Who may call what (docs/authz.md): tokens, orgs, the audit trail."""

    jwks_file: Path | None = None
    """JWKS (public keys only) that bearer tokens are verified against; re-read when it
    changes (key rotation without restart). Unset: no tokens, devices authenticate by
    certificate only."""
    issuer: str = "aiml021"
    """The ``iss`` every token must carry (the authorization server's issuer)."""
    audience: str = "aiml021-gateway"
    """The ``aud`` every token must carry."""
    default_org: str = "default"
    """Org of a device whose certificate names none (no ``aiml021:org:`` URI SAN)."""
    models: dict[str, list[str]] = Field(default_factory=dict)
    """Scopes each model is served to: ``org``, ``org/project`` or ``org/project/region``
    (``{"ocr": ["acme", "globex/lab"]}``; ``*`` for all); a model not listed is served to
    every org (a tail ``<bundle>.<cut>`` not listed: as its bundle). Out of its scope a model is
    not listed and answers NOT_FOUND (docs/authz.md)."""
    private_results: bool = False
    """Result-cache entries per principal instead of per org: no device reads an answer another
    device of its org computed (CacheService.Get included), at the price of cross-device hits."""
    audit_key_file: Path | None = None
    """Secret (32+ bytes, mode 0600) keying the audit chain's HMAC; unset: plain SHA-256."""
    audit_buffer: int = Field(default=10_000, ge=1)
    """Audit events queued for the database before new ones are dropped (and counted)."""


def read_audit_key(path: Path | None) -> bytes | None:
    """The audit HMAC key; refused when readable by others or shorter than 32 bytes."""
    if path is None:
        return None
    from common.errors import InvalidArgument

    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InvalidArgument(f"authz.audit_key_file {path} is mode {mode:o}: it must be 0600")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise InvalidArgument(f"authz.audit_key_file {path}: the key must be at least 32 bytes")
    return key


__all__ = ["AuthzSettings", "read_audit_key"]
