"""Signed bearer tokens (HMAC-SHA256): ``<base64url payload>.<base64url mac>`` with an expiry.

For services that cannot present client certificates (the REST bridge); the session stream
authenticates with mTLS only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from common.errors import Unauthenticated


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    secret: bytes, subject: str, ttl_s: float = 3600.0, now: float | None = None
) -> str:
    """A token for ``subject`` valid for ``ttl_s`` seconds."""
    issued = time.time() if now is None else now
    payload = json.dumps({"sub": subject, "exp": issued + ttl_s}, separators=(",", ":")).encode()
    mac = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> str:
    """The subject of a valid token; Unauthenticated when malformed, forged or expired."""
    try:
        p, m = token.split(".")
        payload, mac = _unb64(p), _unb64(m)
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        raise Unauthenticated("malformed token") from None
    if not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise Unauthenticated("token signature invalid")
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        raise Unauthenticated("token has no subject")
    if float(claims.get("exp", 0)) < (time.time() if now is None else now):
        raise Unauthenticated("token expired")
    return str(claims["sub"])


__all__ = ["issue_token", "verify_token"]
