"""TLS 1.3 only, for gRPC Python too, and server TLS material that can change under a running
server (certificate and CA rotation without restart).

**TLS 1.3 in grpc Python.** grpc's Python API has no minimum-version setting, and the BoringSSL
it ships negotiates TLS 1.2 by default. What grpc does read is ``GRPC_SSL_CIPHER_SUITES``, the
cipher list it hands to ``SSL_CTX_set_cipher_list`` when it builds a TLS context; that list
governs TLS 1.2 and below only (TLS 1.3 suites are not configurable in BoringSSL and stay on).
Restricting it to pre-shared-key suites leaves TLS 1.2 nothing to negotiate: grpc installs no
PSK callback, so a TLS 1.2 ClientHello fails with NO_SHARED_CIPHER whatever the certificate's key
type, while TLS 1.3 is untouched. grpc reads the variable once, when the process first imports
``grpc``, so :func:`require_tls13` must run before that (the ``aiml021`` entry point and the
test suite's conftest call it); :func:`tls12_accepted` is the check that it did: the gateway
probes its own port at start-up and refuses to serve when a TLS 1.2 handshake is answered.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from common.auth._keys import check_private_file, write_atomic
from common.errors import InvalidArgument

log = logging.getLogger(__name__)

GRPC_CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"
TLS12_DISABLED_SUITES = "PSK-AES128-CBC-SHA:PSK-AES256-CBC-SHA"
"""TLS <= 1.2 suites grpc may use: PSK only, which grpc never enables, i.e. none."""


def require_tls13() -> bool:
    """Make grpc in this process speak TLS 1.3 only (see the module docstring). Returns False
    when grpc was imported before this call with another setting: too late for this process."""
    already = "grpc" in sys.modules
    current = os.environ.get(GRPC_CIPHER_ENV)
    if current == TLS12_DISABLED_SUITES:
        return True
    if already:
        return False
    os.environ[GRPC_CIPHER_ENV] = TLS12_DISABLED_SUITES
    return True


def tls12_accepted(host: str, port: int, timeout_s: float = 5.0) -> bool:
    """True when ``host:port`` answers a TLS 1.2-only ClientHello with a ServerHello (the
    handshake goes on), False when it refuses it (an alert, or the connection closes).
    TimeoutError when it does not answer within ``timeout_s``: silence proves nothing (a
    listener served by a blocked event loop is silent too)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_side=False)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(outgoing.read())
        try:
            first = sock.recv(5)
        except ConnectionResetError:
            return False
        except TimeoutError as exc:
            raise TimeoutError(
                f"{host}:{port} did not answer a TLS 1.2 ClientHello within {timeout_s:g} s"
            ) from exc
    # A TLS record starts with its content type: 22 handshake (ServerHello), 21 alert.
    return len(first) >= 1 and first[0] == 22


def _probe_hosts(host: str) -> list[str]:
    """Addresses that reach a listener bound to ``host`` from this machine."""
    # Binds nothing: maps a wildcard bind address to the loopback addresses the probe dials.
    wildcard = {"0.0.0.0": ["127.0.0.1"], "": ["127.0.0.1"]}  # nosec B104
    if host in ("::", "[::]"):
        return ["::1", "127.0.0.1"]  # dual-stack; ::1 may be off in a container
    return wildcard.get(host, [host.strip("[]")])


def assert_tls13_only(host: str, port: int, what: str, timeout_s: float = 5.0) -> None:
    """Refuse (InvalidArgument) a listener on ``host:port`` that accepts TLS 1.2. When no
    address of it can be reached from here, or it does not answer, the check is skipped with a
    warning. It blocks: a server whose listener is served by the caller's event loop must run
    it in another thread (``asyncio.to_thread``), or the listener cannot answer."""
    for candidate in _probe_hosts(host):
        try:
            accepted = tls12_accepted(candidate, port, timeout_s)
        except TimeoutError as exc:
            log.warning("could not check that %s refuses TLS 1.2: %s", what, exc)
            return
        except OSError as exc:
            log.debug("TLS 1.2 probe of %s:%d failed to connect: %s", candidate, port, exc)
            continue
        if accepted:
            raise InvalidArgument(
                f"{what} on {host}:{port} accepts TLS 1.2; the gateway serves TLS 1.3 only. grpc "
                f"was imported before {GRPC_CIPHER_ENV} was set: start through `aiml021 serve`, or "
                "call common.auth.require_tls13() before importing grpc"
            )
        return
    log.warning("could not reach %s on %s:%d to check that TLS 1.2 is refused", what, host, port)


@dataclass(frozen=True)
class ServerTls:
    """One consistent set of server TLS material, PEM."""

    ca_bundle: bytes
    cert_chain: bytes
    key: bytes
    cert: x509.Certificate

    @property
    def serial(self) -> str:
        return format(self.cert.serial_number, "x")


def load_server_tls(
    directory: Path,
    cert_file: str = "server.pem",
    key_file: str = "server.key",
    ca_file: str | None = "ca.pem",
) -> ServerTls:
    """A gateway's server TLS material (ca.pem, server.pem and server.key), checked: the CA's
    private key must not be in the directory (unless ``ca_file`` is None: a CA's own service
    identity), the server key must be EC, readable by its owner only and belong to the
    certificate, which must carry serverAuth."""
    if ca_file is not None and (directory / "ca.key").exists():
        raise InvalidArgument(
            f"{directory / 'ca.key'}: the CA private key must not live in the gateway's TLS "
            "directory; move it to the CA's own directory (`aiml021 ca init --dir ...`) and keep "
            "only ca.pem here"
        )
    files = {"server.pem": directory / cert_file, "server.key": directory / key_file}
    if ca_file is not None:
        files["ca.pem"] = directory / ca_file
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise InvalidArgument(
            f"tls.dir {directory}: {', '.join(missing)} missing; create certificates with "
            "`aiml021 certs` or pass --insecure for development"
        )
    check_private_file(files["server.key"], "server private key")
    chain, key_pem = files["server.pem"].read_bytes(), files["server.key"].read_bytes()
    ca = files["ca.pem"].read_bytes() if "ca.pem" in files else b""
    try:
        cert = x509.load_pem_x509_certificates(chain)[0]
        if ca:
            x509.load_pem_x509_certificates(ca)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, IndexError) as exc:
        raise InvalidArgument(f"tls.dir {directory}: unreadable PEM ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{files['server.key']}: the server key must be EC (P-256/P-384)")
    if cert.public_key() != key.public_key():
        raise InvalidArgument(f"{files['server.pem']} does not belong to {files['server.key']}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise InvalidArgument(f"{files['server.pem']} lacks ExtendedKeyUsage serverAuth")
    return ServerTls(ca, chain, key_pem, cert)


class ReloadingServerTls:
    """The server TLS material of a directory, re-read when its files change (looked at most
    every ``min_interval_s``). A change that does not load (a certificate written before its
    key) keeps the last good material and is retried. Shared by every listener."""

    def __init__(
        self,
        directory: Path,
        min_interval_s: float = 1.0,
        *,
        cert_file: str = "server.pem",
        key_file: str = "server.key",
        ca_file: str | None = "ca.pem",
    ) -> None:
        self.directory = directory
        self.min_interval_s = min_interval_s
        self._names = (cert_file, key_file, ca_file)
        self.current = self._load()
        self.reloads = 0
        self._stamp = self._signature()
        self._looked = time.monotonic()
        self._lock = threading.Lock()

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for name in (*[n for n in self._names if n], "ca.key"):
            try:
                st = os.stat(self.directory / name)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def _load(self) -> ServerTls:
        cert_file, key_file, ca_file = self._names
        return load_server_tls(self.directory, cert_file, key_file, ca_file)

    def latest(self) -> tuple[int, ServerTls]:
        """(version, material): re-read first when the files changed (at most every
        ``min_interval_s``); the version grows with each reload, so each listener can tell
        whether it serves the newest. Thread-safe (grpc calls it from handshake threads)."""
        with self._lock:
            now = time.monotonic()
            if now - self._looked >= self.min_interval_s:
                self._looked = now
                self._refresh()
            return self.reloads, self.current

    def _refresh(self) -> None:
        stamp = self._signature()
        if stamp == self._stamp:
            return
        try:
            fresh = self._load()
        except (InvalidArgument, OSError) as exc:
            log.warning("server TLS material changed but does not load yet: %s", exc)
            return
        self._stamp = stamp
        if fresh != self.current:
            self.current = fresh
            self.reloads += 1
            log.info("server TLS material reloaded (certificate serial %s)", fresh.serial)

    def ssl_context(self) -> ssl.SSLContext:
        """A server SSLContext (TLS 1.3 only, client certificates required) of the current
        material."""
        return server_ssl_context(self.current)


def follow_rotation(listening: ssl.SSLContext, source: ReloadingServerTls) -> None:
    """Make a listening server context serve ``source``'s newest material: on each ClientHello
    (the SNI callback runs for every handshake, with or without a server name) the connection
    is switched to a context built from the newest material, when it changed since start."""
    version = [source.latest()[0]]
    serving = [listening]

    def switch(conn: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        latest, material = source.latest()
        if latest != version[0]:
            serving[0], version[0] = server_ssl_context(material), latest
        if serving[0] is not listening:
            conn.context = serving[0]

    listening.sni_callback = switch


def server_ssl_context(material: ServerTls) -> ssl.SSLContext:
    """A TLS 1.3-only server context requiring client certificates from ``material``'s CAs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=material.ca_bundle.decode())
    # load_cert_chain reads files only: hand it exactly the material that was checked, through
    # a private temporary directory.
    with tempfile.TemporaryDirectory(prefix="aiml021-tls-") as tmp:
        cert, key = Path(tmp) / "server.pem", Path(tmp) / "server.key"
        write_atomic(cert, material.cert_chain, 0o600)
        write_atomic(key, material.key, 0o600)
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


__all__ = [
    "GRPC_CIPHER_ENV",
    "TLS12_DISABLED_SUITES",
    "ReloadingServerTls",
    "ServerTls",
    "assert_tls13_only",
    "follow_rotation",
    "load_server_tls",
    "require_tls13",
    "server_ssl_context",
    "tls12_accepted",
]
