"""``aiml021 token``: signing keys in a JWKS (keygen, retire) and tokens (issue, inspect).

``keygen`` writes a new private key (0600, created so) and appends its public half to the JWKS
the gateway verifies against (``authz.jwks_file``); ``retire`` drops a key from the JWKS once its
tokens have expired; ``issue`` signs a token for an operator, admin, observer, service or (bound
to its certificate) a device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROLES = ("Admin", "Operator", "Observer", "Device", "Service")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``token`` subcommand."""
    p = subparsers.add_parser("token", help="JWKS signing keys and bearer tokens")
    sub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    k = sub.add_parser("keygen", help="new signing key; its public half joins the JWKS")
    k.add_argument("--key", type=Path, required=True, help="private JWK file to create (0600)")
    k.add_argument("--jwks", type=Path, required=True, help="JWKS file to add the public key to")
    k.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")
    k.set_defaults(func=_keygen)

    r = sub.add_parser("retire", help="remove a key from the JWKS (its tokens stop verifying)")
    r.add_argument("--jwks", type=Path, required=True)
    r.add_argument(
        "--kid",
        required=True,
        help="key id; write --kid=KID (a thumbprint can begin with '-', which argparse would "
        "otherwise read as an option)",
    )
    r.set_defaults(func=_retire)

    i = sub.add_parser("issue", help="sign a token (printed on stdout)")
    i.add_argument("--key", type=Path, required=True, help="private JWK file (mode 0600)")
    i.add_argument("--sub", required=True, help="subject: user, client id or device id")
    i.add_argument("--role", choices=ROLES, required=True)
    i.add_argument("--org", required=True)
    i.add_argument("--project", default="*")
    i.add_argument("--region", default="*")
    i.add_argument("--ttl", type=float, default=900.0, help="seconds (default 900)")
    i.add_argument("--issuer", default="aiml021")
    i.add_argument("--audience", default="aiml021-gateway")
    i.add_argument("--cert", type=Path, help="bind to this client certificate (PEM; cnf x5t#S256)")
    i.set_defaults(func=_issue)


def _read_jwks(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"keys": []}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        from common.errors import InvalidArgument

        raise InvalidArgument(f"{path} is not a JWKS")
    return doc


def _write_jwks(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)  # the gateway never reads half a file


def _keygen(args: argparse.Namespace) -> int:
    from common.auth._tokens import generate_signing_key, public_jwk, write_private_jwk

    jwk = generate_signing_key(args.alg)
    write_private_jwk(args.key, jwk)
    doc = _read_jwks(args.jwks)
    doc["keys"].append(public_jwk(jwk))
    _write_jwks(args.jwks, doc)
    print(f"kid {jwk['kid']}: private key {args.key}, JWKS {args.jwks} ({len(doc['keys'])} keys)")
    return 0


def _retire(args: argparse.Namespace) -> int:
    doc = _read_jwks(args.jwks)
    kept = [k for k in doc["keys"] if k.get("kid") != args.kid]
    if len(kept) == len(doc["keys"]):
        print(f"kid {args.kid} is not in {args.jwks}", file=sys.stderr)
        return 1
    if not kept:
        print("refusing to remove the last key (no token could verify)", file=sys.stderr)
        return 1
    _write_jwks(args.jwks, {**doc, "keys": kept})
    print(f"kid {args.kid} retired; {len(kept)} key(s) left")
    return 0


def _issue(args: argparse.Namespace) -> int:
    from common.auth._tokens import issue_token, read_private_jwk

    cert_der = None
    if args.cert is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert_der = x509.load_pem_x509_certificate(args.cert.read_bytes()).public_bytes(Encoding.DER)
    token = issue_token(
        read_private_jwk(args.key),
        args.sub,
        args.role,
        args.org,
        project=args.project,
        region=args.region,
        ttl_s=args.ttl,
        issuer=args.issuer,
        audience=args.audience,
        cert_der=cert_der,
    )
    print(token)
    return 0


__all__ = ["register"]
