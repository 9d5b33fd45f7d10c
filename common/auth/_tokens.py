"""Signed bearer tokens (JWT, ES256 or RS256) verified against a JWKS that rotates (joserfc).

Who issues them: an OAuth2 authorization server's client-credentials grant for services (any
issuer that publishes a JWKS), or ``aiml021 token issue`` for operators, admins and development.
The gateway only ever holds public keys: it verifies, it never signs.

Claims the gateway reads (RFC 9068 names where one exists):

- ``sub`` the principal; ``role`` one of Admin, Operator, Observer, Device, Service;
- ``org``, ``project``, ``region`` the scope (``*`` for every project/region of the org);
- ``iss``, ``aud``, ``exp``, ``iat``, ``nbf`` checked; ``kid`` in the header picks the key;
- ``cnf.x5t#S256`` (RFC 8705): the token is bound to the client certificate with that SHA-256
  thumbprint and is refused over any other connection.

Rotation: publish the new key in the JWKS beside the old one, issue with the new ``kid``, drop
the old key once its tokens expired. :class:`JwksVerifier` re-reads the JWKS file when it
changes and when a token names a ``kid`` it does not know (at most once per
``refresh_interval_s``), so neither step needs a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from common.errors import InvalidArgument, Unauthenticated

log = logging.getLogger(__name__)

ALGORITHMS = ("ES256", "RS256")
"""Signature algorithms accepted (asymmetric only: a verifier must not be able to sign)."""
DEFAULT_AUDIENCE = "aiml021-gateway"
DEFAULT_ISSUER = "aiml021"
MAX_TOKEN_BYTES = 8192
"""Longest token read (checked before any decoding)."""
VERIFIED_CACHE = 4096
"""Verified tokens remembered (their signature is not checked again until they expire)."""


def cert_thumbprint(cert_der: bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url (no padding) SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    subject: str
    role: str
    org: str
    project: str = "*"
    region: str = "*"
    issuer: str = DEFAULT_ISSUER
    expires_at: float = 0.0
    key_id: str = ""
    cert_thumbprint: str = ""
    """``cnf.x5t#S256``: the certificate this token is bound to (empty: unbound)."""
    client_id: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def generate_signing_key(alg: str = "ES256", kid: str | None = None) -> dict[str, Any]:
    """A new private JWK (``kid`` set: its RFC 7638 thumbprint unless given; ``alg`` set)."""
    if alg not in ALGORITHMS:
        raise InvalidArgument(f"alg must be one of {', '.join(ALGORITHMS)}, not {alg!r}")
    key: ECKey | RSAKey
    if alg == "ES256":
        key = ECKey.generate_key("P-256", private=True)
    else:
        key = RSAKey.generate_key(3072, private=True)
    jwk = dict(key.as_dict(private=True))
    jwk["kid"] = kid or key.thumbprint()
    jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def public_jwk(private_jwk: Mapping[str, Any]) -> dict[str, Any]:
    """The public half of a JWK (what goes into the JWKS)."""
    key = _import(private_jwk)
    jwk = dict(key.as_dict(private=False))
    for name in ("kid", "alg", "use"):
        if name in private_jwk:
            jwk[name] = private_jwk[name]
    return jwk


def _import(jwk: Mapping[str, Any]) -> ECKey | RSAKey:
    kty = jwk.get("kty")
    if kty == "EC":
        return ECKey.import_key(dict(jwk))
    if kty == "RSA":
        return RSAKey.import_key(dict(jwk))
    raise InvalidArgument(f"unsupported JWK kty {kty!r} (EC or RSA)")


def issue_token(
    private_jwk: Mapping[str, Any],
    subject: str,
    role: str,
    org: str,
    *,
    project: str = "*",
    region: str = "*",
    ttl_s: float = 900.0,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    cert_der: bytes | None = None,
    client_id: str = "",
    now: float | None = None,
) -> str:
    """A signed JWT for ``subject`` with ``role`` in ``org`` (``cert_der``: bound to that
    certificate with ``cnf.x5t#S256``)."""
    if "d" not in private_jwk:
        raise InvalidArgument("issue_token needs a private JWK")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "role": role,
        "org": org,
        "project": project,
        "region": region,
    }
    if client_id:
        claims["client_id"] = client_id
    if cert_der is not None:
        claims["cnf"] = {"x5t#S256": cert_thumbprint(cert_der)}
    alg = str(private_jwk.get("alg", "ES256"))
    header = {"alg": alg, "kid": str(private_jwk.get("kid", "")), "typ": "at+jwt"}
    return jwt.encode(header, claims, _import(private_jwk), algorithms=[alg])


def _str_claim(claims: Mapping[str, Any], name: str, default: str | None = None) -> str:
    value = claims.get(name, default)
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"token claim {name!r} missing or not a string")
    return value


class JwksVerifier:
    """Verifies tokens against a JWKS (a dict, or a file that is re-read when it changes).

    ``now`` (for tests) replaces the clock. Thread-safe: the key set is swapped whole.
    """

    def __init__(
        self,
        jwks: Mapping[str, Any] | Path,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway_s: int = 30,
        refresh_interval_s: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.refresh_interval_s = refresh_interval_s
        self._path = jwks if isinstance(jwks, Path) else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._keys = self._parse(jwks) if isinstance(jwks, Mapping) else self._load()
        # Tokens verified already (a service sends the same one on every call): their claims,
        # until they expire; emptied whenever the key set changes.
        self._verified: OrderedDict[str, TokenClaims] = OrderedDict()

    @staticmethod
    def _parse(doc: Mapping[str, Any]) -> KeySet:
        keys = doc.get("keys")
        if not isinstance(keys, list) or not keys:
            raise InvalidArgument("JWKS has no keys")
        if any("d" in k for k in keys if isinstance(k, Mapping)):
            raise InvalidArgument("JWKS holds a private key: the gateway must only get public keys")
        if any(not (isinstance(k, Mapping) and k.get("kid")) for k in keys):
            raise InvalidArgument("every JWKS key needs a kid (rotation picks keys by kid)")
        return KeySet.import_key_set({"keys": list(keys)})

    def _load(self) -> KeySet:
        assert self._path is not None
        try:
            st = self._path.stat()
            doc = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"JWKS {self._path}: {exc}") from None
        self._stamp = (st.st_mtime_ns, st.st_size)
        self._checked = time.monotonic()
        return self._parse(doc)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the JWKS file if it changed (no more often than ``refresh_interval_s``
        unless ``force``); True when the key set was replaced. A broken new file keeps the
        old keys (logged)."""
        if self._path is None:
            return False
        with self._lock:
            if not force and time.monotonic() - self._checked < self.refresh_interval_s:
                return False
            self._checked = time.monotonic()
            try:
                st = self._path.stat()
            except OSError as exc:
                log.warning("JWKS %s unreadable, keeping the old keys: %s", self._path, exc)
                return False
            if (st.st_mtime_ns, st.st_size) == self._stamp:
                return False
            try:
                self._keys = self._load()
                self._verified.clear()
            except InvalidArgument as exc:
                log.warning("JWKS %s not reloaded, keeping the old keys: %s", self._path, exc)
                return False
            log.info("JWKS %s reloaded: kids %s", self._path, self.key_ids())
            return True

    def key_ids(self) -> list[str]:
        """The ``kid`` of every key trusted now."""
        return [str(k.kid) for k in self._keys.keys]

    def verify(self, token: str, now: float | None = None) -> TokenClaims:
        """The claims of a valid token; Unauthenticated when malformed, unsigned by a JWKS key,
        expired, not yet valid, for another issuer or audience, or missing a required claim."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated(f"token longer than {MAX_TOKEN_BYTES} bytes")
        self.refresh()
        clock = time.time() if now is None else now
        known = self._verified.get(token)
        if known is not None:
            if clock <= known.expires_at + self.leeway_s:
                return known
            self._verified.pop(token, None)
        claims = self._verify(token, clock)
        self._verified[token] = claims
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str, now: float) -> TokenClaims:
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            raise Unauthenticated("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token header has no kid")
        if kid not in self.key_ids() and self.refresh(force=True):
            log.debug("kid %s found after reloading the JWKS", kid)
        try:
            decoded = jwt.decode(token, self._keys, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError) as exc:
            raise Unauthenticated(f"token signature invalid: {exc}") from None
        claims = decoded.claims
        clock = int(now)
        registry = jwt.JWTClaimsRegistry(
            now=clock,
            leeway=self.leeway_s,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise Unauthenticated(f"token rejected: {exc.error}: {exc.description}") from None
        cnf = claims.get("cnf")
        thumb = cnf.get("x5t#S256", "") if isinstance(cnf, Mapping) else ""
        return TokenClaims(
            subject=_str_claim(claims, "sub"),
            role=_str_claim(claims, "role"),
            org=_str_claim(claims, "org"),
            project=_str_claim(claims, "project", "*"),
            region=_str_claim(claims, "region", "*"),
            issuer=_str_claim(claims, "iss"),
            expires_at=float(claims["exp"]),
            key_id=kid,
            cert_thumbprint=str(thumb),
            client_id=str(claims.get("client_id", "")),
            extra={k: v for k, v in claims.items() if k not in _KNOWN},
        )


_KNOWN = frozenset(
    {"iss", "aud", "sub", "iat", "nbf", "exp", "role", "org", "project", "region", "cnf"}
    | {"client_id"}
)


def write_private_jwk(path: Path, jwk: Mapping[str, Any]) -> None:
    """Write a private JWK created 0600 (never visible with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(dict(jwk), f)
    os.replace(tmp, path)


def read_private_jwk(path: Path) -> dict[str, Any]:
    """A private JWK file; refused when group or others can read it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise InvalidArgument(f"{path} is mode {mode:o}: a signing key must be 0600")
    doc = json.loads(path.read_bytes())
    if not isinstance(doc, dict) or "d" not in doc:
        raise InvalidArgument(f"{path} is not a private JWK")
    return doc


__all__ = [
    "ALGORITHMS",
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "JwksVerifier",
    "TokenClaims",
    "cert_thumbprint",
    "generate_signing_key",
    "issue_token",
    "public_jwk",
    "read_private_jwk",
    "write_private_jwk",
]
