"""JWT bearer tokens verified against a rotating JWKS (joserfc): what holds, what is refused, and
key rotation without a restart."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from common.auth._tokens import (
    JwksVerifier,
    cert_thumbprint,
    generate_signing_key,
    issue_token,
    public_jwk,
    read_private_jwk,
    write_private_jwk,
)
from common.cli import main
from common.errors import InvalidArgument, Unauthenticated


@pytest.fixture(scope="module")
def key() -> dict:
    return generate_signing_key("ES256")


def _jwks(*keys: dict) -> dict:
    return {"keys": [public_jwk(k) for k in keys]}


def test_a_token_carries_role_scope_and_binding(key: dict) -> None:
    token = issue_token(
        key, "svc-1", "Service", "acme", project="p1", region="eu", cert_der=b"cert", ttl_s=60
    )
    claims = JwksVerifier(_jwks(key)).verify(token)
    assert (claims.subject, claims.role, claims.org, claims.project, claims.region) == (
        "svc-1",
        "Service",
        "acme",
        "p1",
        "eu",
    )
    assert claims.cert_thumbprint == cert_thumbprint(b"cert") and claims.key_id == key["kid"]


def test_rs256_keys_verify_too() -> None:
    rsa = generate_signing_key("RS256")
    token = issue_token(rsa, "op", "Operator", "acme")
    assert JwksVerifier(_jwks(rsa)).verify(token).role == "Operator"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"now": 1_000_000.0, "ttl_s": 10}, "expired"),
        ({"now": time.time() + 3600}, "future|not valid yet"),
        ({"audience": "someone-else"}, "aud"),
        ({"issuer": "rogue"}, "iss"),
    ],
)
def test_claims_that_do_not_hold_are_refused(key: dict, change: dict, why: str) -> None:
    token = issue_token(key, "op", "Operator", "acme", **change)
    with pytest.raises(Unauthenticated, match=why):
        JwksVerifier(_jwks(key)).verify(token)


def test_forged_unsigned_and_symmetric_tokens_are_refused(key: dict) -> None:
    verifier = JwksVerifier(_jwks(key))
    other = generate_signing_key()
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(issue_token(other, "op", "Admin", "acme"))
    # Same kid, other key: the signature does not verify.
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.verify(issue_token({**other, "kid": key["kid"]}, "op", "Admin", "acme"))
    claims = {"iss": "aiml021", "aud": "aiml021-gateway", "sub": "x", "role": "Admin"}
    claims |= {"org": "acme", "exp": int(time.time()) + 60}
    hs = jwt.encode({"alg": "HS256", "kid": key["kid"]}, claims, OctKey.import_key(b"k" * 32))
    with pytest.raises(Unauthenticated):
        verifier.verify(hs)
    header = json.dumps({"alg": "none", "kid": key["kid"]}).encode()
    import base64

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    with pytest.raises(Unauthenticated):
        verifier.verify(f"{b64(header)}.{b64(json.dumps(claims).encode())}.")
    for garbage in ("", "a.b", "a.b.c", "x" * 10_000):
        with pytest.raises(Unauthenticated):
            verifier.verify(garbage)


def test_a_token_without_role_or_org_is_refused(key: dict) -> None:
    claims = {"iss": "aiml021", "aud": "aiml021-gateway", "sub": "x", "exp": int(time.time()) + 60}
    from joserfc.jwk import ECKey

    token = jwt.encode({"alg": "ES256", "kid": key["kid"]}, claims, ECKey.import_key(key))
    with pytest.raises(Unauthenticated, match="role"):
        JwksVerifier(_jwks(key)).verify(token)


def test_a_jwks_must_hold_public_keys_with_kids(key: dict) -> None:
    with pytest.raises(InvalidArgument, match="private"):
        JwksVerifier({"keys": [key]})
    with pytest.raises(InvalidArgument, match="kid"):
        JwksVerifier({"keys": [{k: v for k, v in public_jwk(key).items() if k != "kid"}]})
    with pytest.raises(InvalidArgument, match="no keys"):
        JwksVerifier({"keys": []})


def test_key_rotation_through_the_jwks_file_needs_no_restart(tmp_path: Path, key: dict) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_jwks(key)))
    verifier = JwksVerifier(path, refresh_interval_s=3600)
    old_token = issue_token(key, "op", "Operator", "acme")
    assert verifier.verify(old_token).subject == "op"
    new = generate_signing_key()
    path.write_text(json.dumps(_jwks(key, new)))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    # An unknown kid re-reads the file at once (the refresh interval is an hour).
    assert verifier.verify(issue_token(new, "op2", "Admin", "acme")).subject == "op2"
    assert sorted(verifier.key_ids()) == sorted([key["kid"], new["kid"]])
    # Retiring the old key: its tokens stop verifying.
    path.write_text(json.dumps(_jwks(new)))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert verifier.refresh(force=True)
    with pytest.raises(Unauthenticated):
        verifier.verify(old_token)
    # A broken file keeps the keys that worked.
    path.write_text("{not json")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 3 * 10**9))
    assert not verifier.refresh(force=True)
    assert verifier.key_ids() == [new["kid"]]


def test_private_jwk_files_are_created_0600_and_refused_wider(tmp_path: Path, key: dict) -> None:
    path = tmp_path / "signing.jwk"
    write_private_jwk(path, key)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_private_jwk(path)["kid"] == key["kid"]
    path.chmod(0o644)
    with pytest.raises(InvalidArgument, match="0600"):
        read_private_jwk(path)


def test_token_cli_keygen_issue_and_retire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jwks, k1, k2 = tmp_path / "jwks.json", tmp_path / "k1.jwk", tmp_path / "k2.jwk"
    assert main(["token", "keygen", "--key", str(k1), "--jwks", str(jwks)]) == 0
    assert main(["token", "keygen", "--key", str(k2), "--jwks", str(jwks), "--alg", "RS256"]) == 0
    capsys.readouterr()
    issue = ["token", "issue", "--key", str(k1), "--sub", "alice", "--role", "Admin"]
    assert main([*issue, "--org", "acme", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert JwksVerifier(jwks).verify(token).role == "Admin"
    kid1 = read_private_jwk(k1)["kid"]
    assert main(["token", "retire", "--jwks", str(jwks), f"--kid={kid1}"]) == 0
    with pytest.raises(Unauthenticated):
        JwksVerifier(jwks).verify(token)
    kid2 = read_private_jwk(k2)["kid"]
    assert main(["token", "retire", "--jwks", str(jwks), f"--kid={kid2}"]) == 1  # the last key


def test_token_retire_takes_a_kid_that_begins_with_a_dash(tmp_path: Path) -> None:
    # an RFC 7638 thumbprint is base64url: 1 in 64 begins with '-' (a CI run drew one)
    from common.auth._tokens import generate_signing_key, public_jwk

    jwks = tmp_path / "jwks.json"
    keys = [public_jwk(generate_signing_key(kid=kid)) for kid in ("-dash", "plain")]
    jwks.write_text(json.dumps({"keys": keys}))
    assert main(["token", "retire", "--jwks", str(jwks), "--kid=-dash"]) == 0
    assert [k["kid"] for k in json.loads(jwks.read_text())["keys"]] == ["plain"]


def test_a_remembered_token_still_expires(key: dict) -> None:
    verifier = JwksVerifier(_jwks(key))
    token = issue_token(key, "svc", "Service", "acme", ttl_s=60)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # remembered: not verified again
    with pytest.raises(Unauthenticated, match="expired"):
        verifier.verify(token, now=time.time() + 3600)
