"""Encryption at rest for the metadata database's rows: the columns that hold what a client sent
or what the model answered are sealed with AES-256-GCM (``common.privacy.KeyRing``) into one
``sealed`` column per row; the columns that queries and aggregates need stay in the clear.

Sealed (:data:`SEALED_COLUMNS`): ``requests.idempotency_key`` and ``requests.offload_reason``
(free text a client chose), ``results.top_class`` (the answer) and ``sessions.end_reason`` (may
quote what a client sent). In the clear: pseudonymised ids (the keys rows join on and ``forget``
deletes by), labels bounded by the gateway's configuration (model, version, route, status, api,
codec, cut point, region) and numbers (times, latency, confidence, bytes, cost) — docs/privacy.md
says why each stays readable.

A sealed value is the base64 of ``KeyRing.seal(json, context)``; ``context`` names the table and
the row's key, so a value copied onto another row fails to open. When a ring is configured every
row written carries a seal (even when its sealed columns are empty), so a row without one is
either older than encryption or was written around the gateway: :func:`open_row` refuses it
(DataLoss), and ``aiml021 privacy keys reseal --seal-clear`` adopts rows written before.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from common.errors import DataLoss
from common.privacy import KeyRing

SEALED_COLUMNS: dict[str, tuple[str, ...]] = {
    "requests": ("idempotency_key", "offload_reason"),
    "results": ("top_class",),
    "sessions": ("end_reason",),
}
"""Table -> the columns whose values are kept only inside the row's ``sealed`` column."""
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "requests": ("device_id", "request_id"),
    "results": ("device_id", "request_id"),
    "sessions": ("session_id",),
}
"""Table -> its primary key (what a seal is bound to)."""
CLEARED: dict[str, object] = {
    "idempotency_key": "",
    "offload_reason": "",
    "top_class": None,
    "end_reason": "",
}
"""What a sealed column holds in the clear: its empty value."""


def _context(table: str, key: tuple[object, ...]) -> bytes:
    return "\x1f".join(["aiml021.metadata", table, *(str(k) for k in key)]).encode()


def _row_name(table: str, key: tuple[object, ...]) -> str:
    return f"{table} row ({', '.join(str(k) for k in key)})"


class RowSealer:
    """Seals and opens the content columns of metadata rows under a key ring."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def seal(self, table: str, key: tuple[object, ...], values: dict[str, Any]) -> str:
        """The ``sealed`` column of a row of ``table`` with primary key ``key``."""
        body = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        return base64.b64encode(self.ring.seal(body, _context(table, key))).decode("ascii")

    def blob(self, table: str, key: tuple[object, ...], sealed: str) -> bytes:
        """The raw sealed bytes of a ``sealed`` column (DataLoss when it is not a seal)."""
        if not sealed:
            raise DataLoss(
                f"{_row_name(table, key)} is not sealed: written before at-rest encryption was "
                "switched on, or written around the gateway ('aiml021 privacy keys reseal "
                "--seal-clear' adopts rows written before)"
            )
        try:
            return base64.b64decode(sealed.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise DataLoss(f"{_row_name(table, key)}: sealed column is not base64") from None

    def key_id(self, table: str, key: tuple[object, ...], sealed: str) -> str:
        """Id of the key the row was sealed under."""
        return self.ring.key_id_of(self.blob(table, key, sealed))

    def open(
        self, table: str, key: tuple[object, ...], sealed: str, clear: dict[str, Any]
    ) -> dict[str, Any]:
        """The row's sealed columns, checked: DataLoss when the row is not sealed, was sealed
        for another row, under a key the ring no longer holds, was altered, or has content in
        a column that must be empty on a sealed row."""
        blob = self.blob(table, key, sealed)
        try:
            plain = self.ring.open(blob, _context(table, key))
        except DataLoss as exc:
            raise DataLoss(f"{_row_name(table, key)}: {exc.message}") from None
        written = [c for c in SEALED_COLUMNS[table] if clear.get(c) not in (None, "")]
        if written:
            raise DataLoss(
                f"{_row_name(table, key)}: sealed row has content in clear column(s) {written}"
            )
        values = json.loads(plain)
        if not isinstance(values, dict) or set(values) != set(SEALED_COLUMNS[table]):
            raise DataLoss(f"{_row_name(table, key)}: sealed value has the wrong columns")
        return values


def clear_values(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """The sealed columns' values of a row written in the clear."""
    return {c: row.get(c, CLEARED[c]) for c in SEALED_COLUMNS[table]}


__all__ = ["CLEARED", "ROW_KEYS", "SEALED_COLUMNS", "RowSealer", "clear_values"]
