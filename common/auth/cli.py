"""``aiml021 certs`` (development PKI), ``aiml021 ca ...`` (the issuing CA, run on its own host)
and ``aiml021 enroll`` (on a device: key + CSR -> certificate)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from common.errors import AimlError

log = logging.getLogger(__name__)


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``24h`` or ``7d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (90s, 15m, 24h, 7d)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be positive")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``certs`` and ``enroll`` subcommands (``ca``: :func:`register_ca`, registered by
    ``cloud._ca_cli`` with the audit trail)."""
    p = subparsers.add_parser(
        "certs", help="development PKI: CA (kept apart), server and device certificates"
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("certs"),
        help="TLS directory (gateway --tls-dir, device tls.dir)",
    )
    p.add_argument(
        "--ca-dir", type=Path, help="the CA's own directory (default: <out>-ca, never inside --out)"
    )
    p.add_argument("--device", action="append", default=[], help="device id (repeatable)")
    p.add_argument("--host", action="append", default=[], help="server DNS name or IP (repeatable)")
    p.set_defaults(func=_certs)

    e = subparsers.add_parser(
        "enroll", help="on a device: make a key, enroll with a bootstrap token"
    )
    e.add_argument("--ca", required=True, help="CA service host:port")
    e.add_argument("--device", required=True)
    e.add_argument("--token", required=True, help="bootstrap token (aiml021 ca issue-bootstrap)")
    e.add_argument(
        "--tls-dir",
        type=Path,
        required=True,
        help="device TLS directory; ca.pem there trusts the CA",
    )
    e.add_argument("--server-name", help="TLS name of the CA service if not its address")
    e.set_defaults(func=_enroll)


Record = Callable[[str, str, str, str], None]
"""``record(action, resource, outcome, detail)``: one CA action for the audit trail."""
AuditOpener = Callable[[argparse.Namespace], AbstractAsyncContextManager[Record]]


@asynccontextmanager
async def _no_audit(args: argparse.Namespace) -> AsyncIterator[Record]:
    yield lambda action, resource, outcome, detail: None


def register_ca(
    subparsers: argparse._SubParsersAction, audit: AuditOpener | None = None
) -> argparse.ArgumentParser:
    """Add the ``ca`` subcommand; every action that changes something (and every enrollment
    and renewal the service answers) is handed to ``audit``'s recorder."""
    ca = subparsers.add_parser(
        "ca", help="the issuing CA (its own directory and host, never the gateway's)"
    )
    ca.add_argument("--dir", type=Path, required=True, help="the CA directory (holds ca.key)")
    sub = ca.add_subparsers(dest="ca_command", metavar="ACTION", required=True)
    c = sub.add_parser("init", help="create the CA and the CA service's TLS identity")
    c.add_argument("--name", default="aiml021 issuing CA")
    c.add_argument(
        "--host", action="append", default=[], help="CA service DNS name or IP (repeatable)"
    )
    c.set_defaults(func=_ca_init)
    c = sub.add_parser("issue-bootstrap", help="one-time enrollment token for a device")
    c.add_argument("--device", required=True)
    c.add_argument("--ttl", type=_duration, default=3600.0, help="token lifetime (default 1h)")
    _scope_arguments(c)
    c.set_defaults(func=_ca_bootstrap)
    c = sub.add_parser("sign", help="sign a certificate request offline")
    c.add_argument("--csr", type=Path, required=True)
    c.add_argument("-o", "--out", type=Path, required=True, help="where to write the certificate")
    kind = c.add_mutually_exclusive_group(required=True)
    kind.add_argument("--device", help="device profile for this device id")
    kind.add_argument("--host", action="append", help="server profile for these hosts (repeatable)")
    c.add_argument(
        "--lifetime", type=_duration, help="certificate lifetime (device default 24h, server 90d)"
    )
    _scope_arguments(c)
    c.set_defaults(func=_ca_sign)
    c = sub.add_parser(
        "server-cert", help="issue a gateway server key+certificate into a TLS directory"
    )
    c.add_argument("--tls-dir", type=Path, required=True)
    c.add_argument("--host", action="append", default=[])
    c.set_defaults(func=_ca_server_cert)
    c = sub.add_parser("revoke", help="add a device or a certificate to the deny-list")
    c.add_argument(
        "--store",
        required=True,
        help="deny-list URL: sqlite:///PATH, postgresql://..., redis://...",
    )
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--device", help="every certificate of this device, and its renewal")
    what.add_argument("--serial", help="one certificate (serial, hex)")
    c.add_argument("--reason", default="")
    c.set_defaults(func=_ca_revoke)
    c = sub.add_parser(
        "rotate", help="new CA key and certificate; the old one stays trusted until retire"
    )
    c.add_argument("--name")
    c.set_defaults(func=_ca_rotate)
    c = sub.add_parser("retire", help="stop trusting every CA but the current one")
    c.set_defaults(func=_ca_retire)
    c = sub.add_parser("bundle", help="print the trust bundle (for gateways' and devices' ca.pem)")
    c.set_defaults(func=_ca_bundle)
    c = sub.add_parser(
        "serve", help="serve enrollment and renewal (EnrollmentService) over TLS 1.3"
    )
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8443)
    c.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    c.add_argument(
        "--revocation-url", default="", help="the gateways' deny-list (see ca revoke --store)"
    )
    c.add_argument(
        "--device-lifetime",
        type=_duration,
        default=24 * 3600.0,
        help="device certificate lifetime (default 24h)",
    )
    c.set_defaults(func=_ca_serve)
    ca.set_defaults(audit_open=audit or _no_audit)
    return ca


async def _audited(
    args: argparse.Namespace, action: str, resource: str, work: Callable[[], Any]
) -> Any:
    """Run ``work`` and record its outcome (the error's code when it fails)."""
    async with args.audit_open(args) as record:
        try:
            result = await work() if asyncio.iscoroutinefunction(work) else work()
        except AimlError as exc:
            record(action, resource, exc.code.value, exc.message)
            raise
        record(action, resource, "OK", "")
        return result


def _certs(args: argparse.Namespace) -> int:
    from common.auth import write_dev_pki

    paths = write_dev_pki(
        args.out, args.device or ["device-0"], args.host or None, ca_dir=args.ca_dir
    )
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _ca_init(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority

    ca = asyncio.run(
        _audited(
            args, "ca.init", str(args.dir),
            lambda: CertificateAuthority.init(args.dir, args.name, args.host or None),
        )
    )  # fmt: skip
    print(
        f"CA {ca.keypair.cert.subject.rfc4514_string()} in {args.dir}; trust bundle {args.dir / 'bundle.pem'}"
    )
    return 0


def _scope_arguments(parser: argparse.ArgumentParser) -> None:
    """The tenant a device certificate is issued into (URI SANs the gateway's RBAC reads)."""
    parser.add_argument("--org", default="", help="the device's organisation (tenant)")
    parser.add_argument("--project", default="", help="its project within the org")
    parser.add_argument("--region", default="", help="its region")


def _scope(args: argparse.Namespace) -> Any:
    from common.auth import DeviceScope

    return DeviceScope(args.org, args.project, args.region)


def _ca_bootstrap(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority

    scope = _scope(args)
    token = asyncio.run(
        _audited(
            args, "ca.issue-bootstrap", args.device,
            lambda: CertificateAuthority.open(args.dir).issue_bootstrap(
                args.device, args.ttl, scope
            ),
        )
    )  # fmt: skip
    print(token)
    return 0


def _ca_sign(args: argparse.Namespace) -> int:
    from common.auth import DEFAULT_DEVICE_LIFETIME_S, CertificateAuthority, write_atomic

    def sign() -> Any:
        ca = CertificateAuthority.open(args.dir)
        csr = args.csr.read_bytes()
        if args.device:
            issued = ca.sign_device(
                csr, args.device, args.lifetime or DEFAULT_DEVICE_LIFETIME_S, _scope(args)
            )
        else:
            issued = ca.sign_server(csr, args.host, (args.lifetime or 90 * 86400) / 86400)
        write_atomic(args.out, issued.cert_pem, 0o644)
        return issued

    issued = asyncio.run(_audited(args, "ca.sign", args.device or ",".join(args.host), sign))
    print(
        f"{args.out}: serial {issued.cert.serial_number:x} until {issued.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    )
    return 0


def _ca_server_cert(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority, write_atomic

    def issue() -> None:
        ca = CertificateAuthority.open(args.dir)
        ca.issue_server(args.host or None).write(args.tls_dir, "server")
        write_atomic(args.tls_dir / "ca.pem", ca.bundle_pem(), 0o644)

    asyncio.run(_audited(args, "ca.server-cert", ",".join(args.host), issue))
    print(f"{args.tls_dir}: server.pem, server.key, ca.pem")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    from common.auth import open_deny_list

    async def run() -> None:
        deny = open_deny_list(args.store)
        try:
            if args.device:
                await deny.revoke("device", args.device, args.reason)
            else:
                await deny.revoke("serial", args.serial.lower().removeprefix("0x"), args.reason)
        finally:
            await deny.close()

    what = f"device:{args.device}" if args.device else f"serial:{args.serial}"
    asyncio.run(_audited(args, "ca.revoke", what, run))
    print(f"revoked {'device ' + args.device if args.device else 'certificate ' + args.serial}")
    return 0


def _ca_rotate(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority

    new = asyncio.run(
        _audited(
            args,
            "ca.rotate",
            str(args.dir),
            lambda: CertificateAuthority.open(args.dir).rotate(args.name),
        )
    ).cert
    print(
        f"new CA {new.subject.rfc4514_string()} (serial {new.serial_number:x}); distribute {args.dir / 'bundle.pem'}"
    )
    return 0


def _ca_retire(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority

    dropped = asyncio.run(
        _audited(
            args, "ca.retire", str(args.dir), lambda: CertificateAuthority.open(args.dir).retire()
        )
    )
    print(f"retired {len(dropped)} CA certificate(s); distribute {args.dir / 'bundle.pem'}")
    return 0


def _ca_bundle(args: argparse.Namespace) -> int:
    from common.auth import CertificateAuthority

    print(CertificateAuthority.open(args.dir).bundle_pem().decode(), end="")
    return 0


def _ca_serve(args: argparse.Namespace) -> int:
    from common.auth import CaServer, EnrollmentServicer, open_deny_list

    async def run() -> None:
        deny = open_deny_list(args.revocation_url) if args.revocation_url else None
        if deny is None:
            log.warning("no --revocation-url: revoked devices can still renew")
        async with args.audit_open(args) as record:
            servicer = EnrollmentServicer(
                args.dir,
                deny,
                device_lifetime_s=args.device_lifetime,
                on_issue=lambda e: record(f"ca.{e.action}", e.device_id, e.outcome, e.detail),
            )
            server = CaServer(servicer, args.host, args.port)
            await server.start()
            if args.port_file is not None:
                args.port_file.write_text(str(server.port))
            log.info(
                "CA service on %s:%d (TLS 1.3), CA directory %s", args.host, server.port, args.dir
            )
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):  # stop gracefully: the audit is flushed
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await server.stop()
                if deny is not None:
                    await deny.close()

    asyncio.run(run())
    return 0


def _enroll(args: argparse.Namespace) -> int:
    from common.auth import DeviceFiles, enroll_device

    files = DeviceFiles(args.tls_dir, args.device)
    cert = asyncio.run(enroll_device(files, args.ca, args.token, server_name=args.server_name))
    print(
        f"{files.cert_path}: serial {cert.serial_number:x} until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    )
    return 0


__all__ = ["AuditOpener", "Record", "register", "register_ca"]
