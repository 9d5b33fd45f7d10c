"""The device's certificate over its life: enrollment on first start (bootstrap token + a CSR
made here), mTLS credentials read fresh for every connection, and renewal before expiry.

The renewal loop sleeps until ``enrollment.renew_at`` of the certificate's lifetime has passed,
then makes a new key, asks the CA (proving possession of the current key) and installs the new
certificate and key; the next connection presents them. A failed renewal is retried with
backoff while the current certificate stays in use; a refusal (revoked: PERMISSION_DENIED, or
UNAUTHENTICATED) is logged as an error and retried at the longest interval. A certificate that
expired (the device was offline too long) cannot be renewed; when the operator has placed a new
bootstrap token in ``enrollment.bootstrap_token_file`` the agent enrolls again with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

import grpc
from cryptography import x509

from common.auth import DeviceFiles, enroll_device, renew_device, renewal_due
from common.errors import AimlError, InvalidArgument, PermissionDenied, Unauthenticated
from edge_agent._settings import EdgeSettings

log = logging.getLogger(__name__)


@dataclass
class RenewalStats:
    """Counters of the certificate lifecycle (this process)."""

    enrolled: int = 0
    renewed: int = 0
    failures: int = 0
    last_error: str = ""


def device_files(settings: EdgeSettings) -> DeviceFiles:
    """Where ``settings.tls`` keeps the device's material."""
    if settings.tls.dir is None:
        raise InvalidArgument("tls.dir is not set (AIML021_EDGE_TLS__DIR)")
    t = settings.tls
    return DeviceFiles(t.dir, settings.device_id, t.ca_file, t.cert_file, t.key_file)


class DeviceCertificate:
    """The device certificate of one agent: credentials for each connection, enrollment and
    renewal with the CA of ``settings.enrollment``."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.files = device_files(settings)
        self.stats = RenewalStats()
        self._lock = asyncio.Lock()
        self._cached: tuple[tuple[float, ...], grpc.ChannelCredentials] | None = None

    @property
    def managed(self) -> bool:
        """True when a CA endpoint is configured (enrollment and renewal on)."""
        return bool(self.settings.enrollment.ca_endpoint)

    def credentials(self) -> grpc.ChannelCredentials:
        """mTLS channel credentials from the files as they are now (re-read after a renewal)."""
        stamp = tuple(
            p.stat().st_mtime_ns if p.exists() else 0.0
            for p in (self.files.ca_path, self.files.cert_path, self.files.key_path)
        )
        if self._cached is None or self._cached[0] != stamp:
            ca, chain, key = self.files.read()
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=chain
            )
            self._cached = (stamp, creds)
        return self._cached[1]

    def _token(self) -> str:
        e = self.settings.enrollment
        if e.bootstrap_token_file is not None:
            try:
                return e.bootstrap_token_file.read_text().strip()
            except OSError as exc:
                raise InvalidArgument(
                    f"enrollment.bootstrap_token_file {e.bootstrap_token_file}: {exc.strerror}"
                ) from None
        return e.bootstrap_token

    async def ensure_enrolled(self) -> None:
        """Enroll when the device has no certificate yet and enrollment is configured."""
        if self.files.cert_path.exists() or not self.managed:
            return
        await self.enroll()

    async def enroll(self) -> None:
        """Enroll now with the configured bootstrap token (a new key and certificate)."""
        token = self._token()
        if not token:
            raise InvalidArgument(
                f"{self.files.cert_path}: no usable certificate and no bootstrap token is set "
                "(enrollment.bootstrap_token_file / AIML021_EDGE_ENROLLMENT__BOOTSTRAP_TOKEN)"
            )
        e = self.settings.enrollment
        async with self._lock:
            await enroll_device(self.files, e.ca_endpoint, token, server_name=e.server_name)
        self.stats.enrolled += 1

    def _expired(self) -> bool:
        cert = self.files.certificate()
        return cert is not None and cert.not_valid_after_utc <= dt.datetime.now(dt.UTC)

    async def renew(self) -> x509.Certificate:
        """Renew now."""
        e = self.settings.enrollment
        async with self._lock:
            cert = await renew_device(self.files, e.ca_endpoint, server_name=e.server_name)
        self.stats.renewed += 1
        return cert

    def _due_in(self) -> float:
        cert = self.files.certificate()
        if cert is None:
            return 0.0
        due = renewal_due(cert, self.settings.enrollment.renew_at)
        return (due - dt.datetime.now(dt.UTC)).total_seconds()

    async def run(self) -> None:
        """Renew before expiry, forever (cancel to stop)."""
        e = self.settings.enrollment
        retry = e.retry_s
        while True:
            wait = self._due_in()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                if self._expired() and self._token():
                    # The certificate lapsed (offline too long): renewal cannot prove anything
                    # any more; a fresh bootstrap token placed by the operator enrolls again.
                    await self.enroll()
                else:
                    await self.renew()
                retry = e.retry_s
            except (AimlError, OSError, ValueError) as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                refused = isinstance(exc, PermissionDenied | Unauthenticated)
                delay = e.retry_max_s if refused else retry
                (log.error if refused else log.warning)(
                    "certificate renewal failed (%s); retrying in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)
                retry = min(retry * 2, e.retry_max_s)


__all__ = ["DeviceCertificate", "RenewalStats", "device_files"]
