"""Durable, encrypted replay queue for offline mode.

SQLite in WAL mode; each entry's body (request metadata + coded features) is sealed with
AES-256-GCM under a key derived with HKDF from a device secret (a file only its owner may read,
or the environment) and bound to the device id; the secret is never stored beside the queue. The associated data binds the entry id and idempotency key, so swapping, editing or
corrupting a row fails authentication: such entries are deleted and reported as ``lost`` while
the rest of the queue keeps working. A file SQLite itself cannot read any more is moved aside
(``<name>.corrupt-<time>``) and a fresh queue is started, reported the same way.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.auth import check_secret, derive_key, read_private_file
from common.errors import InvalidArgument
from edge_agent._types import Reconciliation

log = logging.getLogger(__name__)

_AAD = b"aiml021.replay.v1|"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    nonce BLOB NOT NULL,
    body BLOB NOT NULL
)
"""


def parse_key(text: str | bytes) -> bytes:
    """Secret bytes from hex or base64 text, or the raw bytes themselves (a file of random
    bytes). Strength is checked by :func:`common.auth.check_secret`, not here."""
    raw = text if isinstance(text, bytes) else text.encode()
    s = raw.decode("ascii", "replace").strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            decoded = decode(s)
        except (ValueError, binascii.Error):
            continue
        if decoded:
            return decoded
    return raw


def queue_key(secret: bytes, device_id: str) -> bytes:
    """The queue's AES-256-GCM key: HKDF-SHA256 of the device secret, bound to the device id (a
    queue copied to another device, or a secret reused across devices, opens nothing)."""
    return derive_key(secret, purpose="replay-queue", device_id=device_id)


def load_key(queue_path: Path, key: str | None, key_file: Path | None, device_id: str) -> bytes:
    """The queue key, derived (:func:`queue_key`) from the device secret in ``key`` (env/secret
    store) or ``key_file``. Refused with a precise error: a key file beside the queue (a stolen
    directory must not carry its own key), one its group or others may read, and a weak secret
    (under 32 bytes, one byte repeated such as all zeros, or a handful of distinct bytes)."""
    if key:
        secret = parse_key(key)
        where = "replay.key"
    elif key_file is None:
        raise InvalidArgument(
            "replay queue needs a device secret: set replay.key_file "
            "(AIML021_EDGE_REPLAY__KEY_FILE) or replay.key (AIML021_EDGE_REPLAY__KEY)"
        )
    else:
        if key_file.resolve().parent == queue_path.resolve().parent:
            raise InvalidArgument(
                f"replay.key_file {key_file} sits beside the queue {queue_path}; keep the key "
                "elsewhere"
            )
        secret = parse_key(read_private_file(key_file, "replay.key_file"))
        where = f"replay.key_file {key_file}"
    try:
        return queue_key(check_secret(secret, where), device_id)
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message) from None


@dataclasses.dataclass(frozen=True)
class ReplayEntry:
    """One deferred request, decrypted."""

    entry_id: str
    idempotency_key: str
    created_at: float
    meta: dict[str, object]
    """Request metadata: model_name, model_version, cut_point, codec, dtype, shape,
    original_bytes, crc32c, framed, local answer."""
    payload: bytes


@dataclasses.dataclass
class ReplayMetrics:
    """Counters of the replay queue (this process)."""

    queued: int = 0
    delivered: int = 0
    expired: int = 0
    duplicates_suppressed: int = 0
    lost: int = 0
    dropped: int = 0
    rejected: int = 0
    failed: int = 0


@dataclasses.dataclass(frozen=True)
class EnqueueOutcome:
    entry_id: str
    queued: bool
    duplicate: bool = False
    dropped: tuple[Reconciliation, ...] = ()


class ReplayQueue:
    """The queue; not thread-safe (the agent drives it from one worker thread)."""

    def __init__(
        self,
        path: Path,
        key: bytes,
        retention_s: float = 24 * 3600.0,
        max_entries: int = 100_000,
        max_bytes: int = 512 * 1024 * 1024,
        full_policy: str = "reject_new",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) != 32:
            raise InvalidArgument("replay key must be 32 bytes for AES-256-GCM")
        if full_policy not in ("reject_new", "drop_oldest"):
            raise InvalidArgument(f"replay_full_policy {full_policy!r}: reject_new or drop_oldest")
        self.path = path
        self.retention_s = retention_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.full_policy = full_policy
        self.metrics = ReplayMetrics()
        self.lost_reports: list[Reconciliation] = []
        self._aead = AESGCM(key)
        self._clock = clock
        self._db = self._open()

    # -- storage -----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            db.execute("SELECT count(*) FROM entries").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            self._quarantine(str(exc))
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        db.execute(_SCHEMA)
        return db

    def _quarantine(self, why: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        with_suffixes = [(self.path, moved)] + [
            (self.path.with_name(self.path.name + s), moved.with_name(moved.name + s))
            for s in ("-wal", "-shm")
        ]
        for src, dst in with_suffixes:
            if src.exists():
                os.replace(src, dst)
        report = Reconciliation(
            entry_id="*",
            idempotency_key="*",
            status="lost",
            detail=f"queue file unreadable ({why}); moved to {moved}, all its entries are lost",
        )
        self.metrics.lost += 1
        self.lost_reports.append(report)
        log.error("replay queue %s unreadable (%s); moved to %s", self.path, why, moved)

    def _guard(self, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except sqlite3.DatabaseError as exc:
            with_db = self._db
            with_db.close()
            self._quarantine(str(exc))
            self._db = self._connect()
            return fn()

    def close(self) -> None:
        """Close the database (a checkpoint leaves the data in the main file)."""
        self._db.close()

    # -- API ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(
            self._guard(lambda: self._db.execute("SELECT count(*) FROM entries").fetchone()[0])
        )  # type: ignore[call-overload]

    def size_bytes(self) -> int:
        """Ciphertext bytes held."""
        row = self._guard(
            lambda: self._db.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM entries"
            ).fetchone()
        )
        return int(row[0])  # type: ignore[index]

    def _aad(self, entry_id: str, key: str) -> bytes:
        return _AAD + entry_id.encode() + b"|" + key.encode()

    def enqueue(
        self, idempotency_key: str, meta: dict[str, object], payload: bytes
    ) -> EnqueueOutcome:
        """Seal and store one request; duplicates (same idempotency key) are suppressed."""
        entry_id = uuid.uuid4().hex
        now = self._clock()
        header = json.dumps({**meta, "created_at": now}, separators=(",", ":")).encode()
        plain = len(header).to_bytes(4, "big") + header + payload
        nonce = os.urandom(12)
        body = self._aead.encrypt(nonce, plain, self._aad(entry_id, idempotency_key))
        dropped: list[Reconciliation] = []

        def insert() -> bool:
            exists = self._db.execute(
                "SELECT 1 FROM entries WHERE idempotency_key=?", (idempotency_key,)
            ).fetchone()
            if exists:
                return False
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM entries"
            ).fetchone()
            while count + 1 > self.max_entries or size + len(body) > self.max_bytes:
                if self.full_policy == "reject_new" or count == 0:
                    raise _Full
                seq, eid, key, blen = self._db.execute(
                    "SELECT seq, entry_id, idempotency_key, length(body) FROM entries"
                    " ORDER BY seq LIMIT 1"
                ).fetchone()
                self._db.execute("DELETE FROM entries WHERE seq=?", (seq,))
                dropped.append(Reconciliation(eid, key, "dropped", detail="replay queue full"))
                count, size = count - 1, size - blen
            self._db.execute(
                "INSERT INTO entries (entry_id, idempotency_key, created_at, nonce, body)"
                " VALUES (?,?,?,?,?)",
                (entry_id, idempotency_key, now, nonce, body),
            )
            return True

        try:
            inserted = self._guard(lambda: self._transaction(insert))
        except _Full:
            self.metrics.rejected += 1
            return EnqueueOutcome(entry_id, queued=False)
        self.metrics.dropped += len(dropped)
        if not inserted:
            self.metrics.duplicates_suppressed += 1
            return EnqueueOutcome(entry_id, queued=False, duplicate=True)
        self.metrics.queued += 1
        return EnqueueOutcome(entry_id, queued=True, dropped=tuple(dropped))

    def _transaction(self, fn: Callable[[], bool]) -> bool:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return result

    def peek(
        self, limit: int, after_seq: int = 0
    ) -> tuple[list[tuple[int, ReplayEntry]], list[Reconciliation]]:
        """Up to ``limit`` entries in queue order after ``after_seq``, decrypted. Expired and
        unauthenticated entries are deleted and returned as reconciliation reports instead."""
        rows = self._guard(
            lambda: self._db.execute(
                "SELECT seq, entry_id, idempotency_key, nonce, body FROM entries WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
        good: list[tuple[int, ReplayEntry]] = []
        reports: list[Reconciliation] = []
        now = self._clock()
        for seq, eid, key, nonce, body in rows:  # type: ignore[attr-defined]
            try:
                plain = self._aead.decrypt(bytes(nonce), bytes(body), self._aad(str(eid), str(key)))
                hlen = int.from_bytes(plain[:4], "big")
                meta = json.loads(plain[4 : 4 + hlen])
                entry = ReplayEntry(
                    str(eid), str(key), float(meta["created_at"]), meta, plain[4 + hlen :]
                )
            except (InvalidTag, ValueError, KeyError, TypeError) as exc:
                why = "authentication tag mismatch" if isinstance(exc, InvalidTag) else repr(exc)
                self.metrics.lost += 1
                reports.append(Reconciliation(str(eid), str(key), "lost", detail=why))
                log.error("replay entry %s (key %s) is corrupted or tampered: %s", eid, key, why)
                self._delete(seq)
                continue
            if now - entry.created_at > self.retention_s:
                self.metrics.expired += 1
                reports.append(Reconciliation(entry.entry_id, entry.idempotency_key, "expired"))
                self._delete(seq)
                continue
            good.append((int(seq), entry))
        self.lost_reports.extend(r for r in reports if r.status == "lost")
        return good, reports

    def ack(self, seq: int, duplicate: bool = False) -> None:
        """The gateway answered entry ``seq``: remove it."""
        self._delete(seq)
        self.metrics.delivered += 1
        if duplicate:
            self.metrics.duplicates_suppressed += 1

    def discard(self, seq: int) -> None:
        """Remove an entry the gateway refused for good."""
        self._delete(seq)
        self.metrics.failed += 1

    def _delete(self, seq: int) -> None:
        self._guard(lambda: self._db.execute("DELETE FROM entries WHERE seq=?", (seq,)))


class _Full(Exception):
    pass


__all__ = [
    "EnqueueOutcome",
    "ReplayEntry",
    "ReplayMetrics",
    "ReplayQueue",
    "load_key",
    "parse_key",
    "queue_key",
]
