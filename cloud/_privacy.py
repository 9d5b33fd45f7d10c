"""The gateway's privacy controls (section ``privacy``): device ids pseudonymised and PII
redacted in everything written to the metadata store (request records, device telemetry, device
and session events), AES-256-GCM at rest for the Redis stores, and the DLP metric.

:class:`PrivacySink` wraps the metadata/telemetry sink: the data plane keeps the real device id
for its own work (quotas, tenancy), and only the record that is kept is rewritten.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from pydantic import Field, model_validator

from cloud.core import AuditEvent, AuditSink, RequestRecord, Role, TelemetryEvent
from cloud.stores import DeviceSeen, SessionEvent
from common.auth import check_private_file
from common.errors import InvalidArgument
from common.privacy import KINDS, KeyRing, PiiScanner, Pseudonymiser, Redactor
from common.settings import Section

log = logging.getLogger(__name__)

DLP_FINDINGS = Counter(
    "aiml021_dlp_findings_total",
    "Personal data found and redacted before it was stored or exported, by kind and where.",
    ["kind", "where"],
)


def count_findings(where: str, counts: Mapping[str, int]) -> None:
    """The DLP metric: ``counts`` (kind -> findings) redacted from ``where``."""
    for kind, n in counts.items():
        DLP_FINDINGS.labels(kind, where).inc(n)


class GatewayPrivacySettings(Section):
    """Pseudonyms, DLP and encryption at rest for what the gateway keeps (docs/privacy.md)."""

    pseudonym_key_file: Path | None = None
    """File with the 32-byte HMAC key (hex or base64) that pseudonymises device, session and
    request ids in the metadata store, telemetry, audit log and logs; None (and no
    ``pseudonym_key``) stores them as they are. Keep it out of the database's reach: with it,
    pseudonyms can be linked to ids."""
    pseudonym_key: str | None = None
    """The pseudonym key itself (hex or base64), e.g. from a secret store."""
    retired_pseudonym_key_files: list[Path] = Field(default_factory=list)
    """Pseudonym keys rotated out, kept only so that ``aiml021 privacy forget`` also finds the
    rows recorded under them (the gateway never pseudonymises with them)."""
    dlp: bool = True
    """Scan request records, device telemetry and audit events for personal data (e-mails,
    phone numbers, payment cards, IBANs, IP addresses) and redact it before it is stored."""
    dlp_kinds: list[str] = Field(default_factory=lambda: list(KINDS))
    """Kinds of personal data the scanner looks for."""
    at_rest_key_file: Path | None = None
    """Key ring file (``aiml021 privacy keys``) sealing with AES-256-GCM the values of the Redis
    idempotency store and result cache and the content columns of the metadata database's rows;
    None keeps them in the clear."""
    required: bool = False
    """Refuse to start unless pseudonyms, DLP and encryption at rest are all on, with key files
    that exist, parse and only their owner may read (set it in production: without it a gateway
    missing a key only warns, and stores raw device ids or clear content). The settings are
    checked when they load, the key files when the gateway starts."""

    @model_validator(mode="after")
    def _check(self) -> GatewayPrivacySettings:
        unknown = set(self.dlp_kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"privacy.dlp_kinds: unknown {sorted(unknown)}; known {list(KINDS)}")
        if self.pseudonym_key_file is not None and self.pseudonym_key:
            raise ValueError("set privacy.pseudonym_key_file or privacy.pseudonym_key, not both")
        missing = self.unprotected()
        if self.required and missing:
            raise ValueError(f"privacy.required: {'; '.join(missing)}")
        return self

    def unprotected(self) -> list[str]:
        """What the gateway would keep unprotected with these settings, in words ([] if none)."""
        out = []
        if not (self.pseudonym_key or self.pseudonym_key_file):
            out.append("no privacy.pseudonym_key_file: stored records keep raw device ids")
        if not self.dlp:
            out.append("privacy.dlp is off: stored records are not scanned for personal data")
        if self.at_rest_key_file is None:
            out.append("no privacy.at_rest_key_file: stored content is not encrypted at rest")
        return out

    def check_keys(self) -> None:
        """With ``required``, at start: both key files exist, parse and only their owner may read
        them (InvalidArgument naming the setting and the file otherwise)."""
        if not self.required:
            return
        try:  # the same rule as TLS private keys; both keys load now, before anything serves
            for name, path in (
                ("pseudonym_key_file", self.pseudonym_key_file),
                ("at_rest_key_file", self.at_rest_key_file),
            ):
                if path is not None:
                    check_private_file(path, f"privacy.{name}")
            self.pseudonymiser()
            self.keyring()
        except InvalidArgument as exc:
            raise InvalidArgument(f"privacy.required: {exc.message}") from None

    def pseudonymiser(self) -> Pseudonymiser | None:
        """The configured pseudonymiser, or None."""
        if self.pseudonym_key:
            return Pseudonymiser.from_text(self.pseudonym_key)
        if self.pseudonym_key_file is not None:
            return Pseudonymiser.from_file(self.pseudonym_key_file)
        return None

    def retired_pseudonymisers(self) -> list[Pseudonymiser]:
        """Pseudonymisers of the retired keys (for erasure only)."""
        return [Pseudonymiser.from_file(p) for p in self.retired_pseudonym_key_files]

    def redactor(self) -> Redactor | None:
        """The DLP redactor reporting to the metric, or None when DLP is off."""
        return Redactor(PiiScanner(self.dlp_kinds), count_findings) if self.dlp else None

    def keyring(self) -> KeyRing | None:
        """The at-rest key ring, or None."""
        return None if self.at_rest_key_file is None else KeyRing.load(self.at_rest_key_file)


Sink = Callable[[Any], None]

_WHERE: dict[type, str] = {
    RequestRecord: "request_record",
    TelemetryEvent: "telemetry",
    DeviceSeen: "device",
    SessionEvent: "session",
}
"""Records the sink cleans -> the ``where`` label of the DLP metric."""
_TEXT_FIELDS = frozenset(
    {"request_id", "idempotency_key", "offload_reason", "codec", "cut_point", "region",
     "model_name", "route", "device_class", "end_reason", "status"}
)  # fmt: skip
"""Fields a client can fill with free text (ids, labels); scanned and redacted."""


class PrivacySink:
    """A metadata/telemetry sink that pseudonymises ids and redacts PII, then passes the record
    on to ``inner`` (the metadata writer). Never raises: a record it cannot clean is dropped
    (and logged) rather than stored raw."""

    def __init__(
        self,
        inner: Sink,
        pseudonymiser: Pseudonymiser | None,
        redactor: Redactor | None,
    ) -> None:
        self.inner = inner
        self._p = pseudonymiser
        self._r = redactor

    def _device(self, device_id: str) -> str:
        return self._p.device(device_id) if self._p is not None else device_id

    def _session(self, session_id: str) -> str:
        return self._p.session(session_id) if self._p is not None else session_id

    def _text(self, value: str, where: str) -> str:
        return self._r.text(value, where) if self._r is not None and value else value

    def clean(self, record: Any) -> Any:
        """The record as it may be stored: ids pseudonymised, free-text fields redacted."""
        where = _WHERE.get(type(record))
        if where is None:
            return record
        names = {f.name for f in dataclasses.fields(record)}
        changes: dict[str, str] = {}
        for name in names & {"device_id", "session_id"}:
            value = getattr(record, name)
            changes[name] = self._device(value) if name == "device_id" else self._session(value)
        # Ids the client chose are kept only as keyed pseudonyms when a pseudonymiser is set
        # (rows still join on them, and two keys stay two keys); redacting them instead would
        # collapse different ids ("dev-026-1234", "dev-027-1234" -> "dev-[PHONE]").
        ids = (
            {"request_id": self._p.request, "idempotency_key": self._p.idempotency}
            if (self._p is not None)
            else {}
        )
        for name in names & _TEXT_FIELDS:
            value = getattr(record, name)
            if name in ids:
                changes[name] = ids[name](value)
            elif isinstance(value, str):
                changes[name] = self._text(value, where)
        return dataclasses.replace(record, **changes)

    def __call__(self, record: Any, /) -> None:
        try:
            cleaned = self.clean(record)
        except Exception:
            log.exception("privacy: dropped a %s that could not be cleaned", type(record).__name__)
            return
        self.inner(cleaned)

    def __getattr__(self, item: str) -> Any:
        # The wrapped writer's other methods (submit, flush, stop...) stay reachable.
        return getattr(self.inner, item)


class PseudonymousAudit:
    """An audit sink that names devices by their pseudonym (operators and services keep their
    names: they answer for what they did) and redacts personal data from what a caller may have
    written into an event (``resource``: a model or key it named; ``detail``: the refusal's
    message). The chain is as verifiable as before: it is computed over what is stored."""

    def __init__(
        self,
        inner: AuditSink,
        pseudonymiser: Pseudonymiser | None,
        redactor: Redactor | None = None,
    ) -> None:
        self.inner = inner
        self._p = pseudonymiser
        self._r = redactor

    def __call__(self, event: AuditEvent, /) -> None:
        if self._p is not None and event.role == Role.DEVICE.value and event.principal:
            event = dataclasses.replace(event, principal=self._p.device(event.principal))
        if self._r is not None:
            event = dataclasses.replace(
                event,
                resource=self._r.text(event.resource, "audit"),
                detail=self._r.text(event.detail, "audit"),
            )
        self.inner(event)


__all__ = [
    "DLP_FINDINGS",
    "GatewayPrivacySettings",
    "PrivacySink",
    "PseudonymousAudit",
    "count_findings",
]
