"""What the gateway records about devices, sessions and requests, and the schema that holds it.

Requests arrive as the core's ``cloud.core.RequestRecord`` (from the data plane) or as device
telemetry (``cloud.core.TelemetryEvent``, turned into a record by :func:`telemetry_record`); this
module adds only what is the store's own: device and session events, prices and the schema. The
same versioned migrations run on SQLite and PostgreSQL (portable SQL: TEXT, BIGINT,
DOUBLE PRECISION, ``ON CONFLICT``); times are seconds since the epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from cloud.core import RequestRecord, TelemetryEvent

from ._sealed_rows import CLEARED, RowSealer


class PriceTable(BaseModel):
    """Prices used to cost each cloud request (any currency; USD by convention)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    per_gb_in: float = Field(default=0.0, ge=0)
    """Price per 10^9 bytes received from the device."""
    per_gb_out: float = Field(default=0.0, ge=0)
    """Price per 10^9 bytes sent back."""
    per_compute_hour: float = Field(default=0.0, ge=0)
    """Price per hour of backend compute time."""

    def cost(self, bytes_in: int, bytes_out: int, compute_ms: float) -> float:
        """Cost of one request."""
        return (
            bytes_in / 1e9 * self.per_gb_in
            + bytes_out / 1e9 * self.per_gb_out
            + compute_ms / 3.6e6 * self.per_compute_hour
        )


@dataclass(frozen=True)
class DeviceSeen:
    """A device connected (upserts ``devices``)."""

    device_id: str
    device_class: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SessionEvent:
    """A session stream opened (``ended_at`` None) or closed."""

    session_id: str
    device_id: str
    started_at: float
    ended_at: float | None = None
    end_reason: str = ""


def telemetry_record(event: TelemetryEvent) -> RequestRecord:
    """The record of a request a device reports (route: the device's, e.g. ``edge``; a request
    the gateway already recorded keeps the gateway's row)."""
    return RequestRecord(
        request_id=event.request_id,
        device_id=event.device_id,
        model_name=event.model_name,
        model_version="",
        route=event.route,
        status="OK",
        session_id=event.session_id,
        codec=event.codec,
        cut_point=event.cut_point,
        confidence=event.confidence or None,
        latency_ms=None if event.total_s is None else event.total_s * 1000.0,
        bytes_in=event.bytes_sent,
        bytes_out=event.bytes_received,
        region=event.region,
    )


Record = DeviceSeen | SessionEvent | RequestRecord

#: (version, statements). Append new versions; never edit an applied one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE devices (
                device_id TEXT PRIMARY KEY,
                device_class TEXT NOT NULL DEFAULT '',
                first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL)""",
            """CREATE TABLE sessions (
                session_id TEXT PRIMARY KEY,
                device_id TEXT NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                ended_at DOUBLE PRECISION,
                end_reason TEXT NOT NULL DEFAULT '')""",
            """CREATE TABLE requests (
                device_id TEXT NOT NULL,
                request_id TEXT NOT NULL,
                session_id TEXT NOT NULL DEFAULT '',
                model_name TEXT NOT NULL,
                model_version TEXT NOT NULL,
                route TEXT NOT NULL,
                status TEXT NOT NULL,
                deadline_ms DOUBLE PRECISION,
                idempotency_key TEXT NOT NULL DEFAULT '',
                offload_reason TEXT NOT NULL DEFAULT '',
                codec TEXT NOT NULL DEFAULT '',
                received_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (device_id, request_id))""",
            "CREATE INDEX requests_received ON requests (received_at)",
            """CREATE TABLE results (
                device_id TEXT NOT NULL,
                request_id TEXT NOT NULL,
                top_class INTEGER,
                confidence DOUBLE PRECISION,
                latency_ms DOUBLE PRECISION,
                PRIMARY KEY (device_id, request_id))""",
            """CREATE TABLE costs (
                device_id TEXT NOT NULL,
                request_id TEXT NOT NULL,
                bytes_in BIGINT NOT NULL,
                bytes_out BIGINT NOT NULL,
                compute_ms DOUBLE PRECISION NOT NULL,
                cost DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (device_id, request_id))""",
        ],
    ),
    (
        2,
        [
            # ``route`` held two things: the gateway wrote the API (infer, session...) and devices
            # the route (edge, cloud...). From here ``route`` is only the route; the API has its
            # own column ('' for device reports and for rows written before this version).
            "ALTER TABLE requests ADD COLUMN api TEXT NOT NULL DEFAULT ''",
            "UPDATE requests SET api = route, route = 'cloud' "
            "WHERE route IN ('infer', 'stream', 'session', 'rest')",
        ],
    ),
    (
        3,
        [
            # The hash-chained audit trail (cloud.stores._audit): append-only, one row per
            # management action and per refused call; audit_head is the chain's last row.
            """CREATE TABLE audit_log (
                seq BIGINT PRIMARY KEY,
                at_us BIGINT NOT NULL,
                principal TEXT NOT NULL,
                role TEXT NOT NULL,
                org TEXT NOT NULL,
                action TEXT NOT NULL,
                resource TEXT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL)""",
            "CREATE INDEX audit_log_at ON audit_log (at_us)",
            "CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL)",
        ],
    ),
    (
        4,
        [
            # The device's region (bounded to the gateway's configured regions, '' before this
            # version): the daily summary reports by it.
            "ALTER TABLE requests ADD COLUMN region TEXT NOT NULL DEFAULT ''",
        ],
    ),
    (
        5,
        [
            # Encryption at rest (cloud.stores._sealed_rows): with privacy.at_rest_key_file the
            # content columns of a row are kept only here, AES-256-GCM sealed ('' without a ring).
            "ALTER TABLE requests ADD COLUMN sealed TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE results ADD COLUMN sealed TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE sessions ADD COLUMN sealed TEXT NOT NULL DEFAULT ''",
        ],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

_UPSERT_DEVICE = (
    "INSERT INTO devices (device_id, device_class, first_seen, last_seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (device_id) DO UPDATE SET last_seen = excluded.last_seen, "
    "device_class = excluded.device_class"
)
_UPSERT_SESSION = (
    "INSERT INTO sessions (session_id, device_id, started_at, ended_at, end_reason, sealed) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
    "ended_at = excluded.ended_at, end_reason = excluded.end_reason, sealed = excluded.sealed"
)
_INSERT_REQUEST = (
    "INSERT INTO requests (device_id, request_id, session_id, model_name, model_version, route, "
    "status, deadline_ms, idempotency_key, offload_reason, codec, received_at, api, region, "
    "sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device_id, request_id) DO NOTHING"
)
_INSERT_RESULT = (
    "INSERT INTO results (device_id, request_id, top_class, confidence, latency_ms, sealed) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, request_id) DO NOTHING"
)
_INSERT_COST = (
    "INSERT INTO costs (device_id, request_id, bytes_in, bytes_out, compute_ms, cost) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, request_id) DO NOTHING"
)


class _Columns:
    """The values of a row's sealable columns as stored: as they are without a sealer, else
    emptied and sealed into the row's ``sealed`` column."""

    def __init__(self, sealer: RowSealer | None) -> None:
        self._sealer = sealer

    def __call__(
        self, table: str, key: tuple[object, ...], values: dict[str, object]
    ) -> tuple[list[object], str]:
        if self._sealer is None:
            return list(values.values()), ""
        cleared = [CLEARED[c] for c in values]
        return cleared, self._sealer.seal(table, key, values)


def statements(
    records: list[Record], prices: PriceTable, sealer: RowSealer | None = None
) -> list[tuple[str, list[tuple[object, ...]]]]:
    """Group ``records`` into (SQL with ``?`` placeholders, rows) pairs for ``executemany``;
    with ``sealer`` the content columns are sealed (:mod:`cloud.stores._sealed_rows`)."""
    columns = _Columns(sealer)
    devices: list[tuple[object, ...]] = []
    sessions: list[tuple[object, ...]] = []
    requests: list[tuple[object, ...]] = []
    results: list[tuple[object, ...]] = []
    costs: list[tuple[object, ...]] = []
    for r in records:
        if isinstance(r, DeviceSeen):
            devices.append((r.device_id, r.device_class, r.at, r.at))
        elif isinstance(r, SessionEvent):
            (reason,), sealed = columns("sessions", (r.session_id,), {"end_reason": r.end_reason})
            sessions.append((r.session_id, r.device_id, r.started_at, r.ended_at, reason, sealed))
        else:
            key = (r.device_id, r.request_id)
            (idem, why), sealed = columns(
                "requests",
                key,
                {"idempotency_key": r.idempotency_key, "offload_reason": r.offload_reason},
            )
            requests.append(
                (r.device_id, r.request_id, r.session_id, r.model_name, r.model_version, r.route,
                 r.status, r.deadline_ms, idem, why, r.codec, r.recorded_at, r.api, r.region,
                 sealed)
            )  # fmt: skip
            if r.top_class is not None or r.latency_ms is not None:
                (top,), sealed = columns("results", key, {"top_class": r.top_class})
                results.append((r.device_id, r.request_id, top, r.confidence, r.latency_ms, sealed))
            compute_ms = r.compute_s * 1000.0
            cost = prices.cost(r.bytes_in, r.bytes_out, compute_ms)
            costs.append((r.device_id, r.request_id, r.bytes_in, r.bytes_out, compute_ms, cost))
    out = [
        (_UPSERT_DEVICE, devices),
        (_UPSERT_SESSION, sessions),
        (_INSERT_REQUEST, requests),
        (_INSERT_RESULT, results),
        (_INSERT_COST, costs),
    ]
    return [(sql, rows) for sql, rows in out if rows]
