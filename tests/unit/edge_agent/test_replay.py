"""Replay queue: order, encryption at rest, tamper detection, retention, bounds, key rules."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from common.errors import InvalidArgument
from edge_agent import ReplayQueue, load_key, parse_key
from edge_agent._replay import queue_key


def _q(tmp_path: Path, **kw: object) -> ReplayQueue:
    return ReplayQueue(tmp_path / "replay.db", b"k" * 32, **kw)  # type: ignore[arg-type]


def _meta() -> dict[str, object]:
    return {
        "cut_point": "cut1",
        "codec": "raw",
        "dtype": "float32",
        "shape": [1, 2],
        "original_bytes": 8,
        "crc32c": 0,
    }


def test_entries_come_back_in_order_and_are_encrypted_at_rest(tmp_path: Path) -> None:
    q = _q(tmp_path)
    secret = b"SECRET-FEATURES-0123456789"
    for i in range(5):
        assert q.enqueue(f"key{i}", _meta(), secret + bytes([i])).queued
    entries, reports = q.peek(10)
    assert reports == []
    assert [e.idempotency_key for _, e in entries] == [f"key{i}" for i in range(5)]
    assert entries[2][1].payload == secret + b"\x02" and entries[0][1].meta["cut_point"] == "cut1"
    q.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("replay.db"))
    assert secret not in raw and b"cut1" not in raw
    q2 = _q(tmp_path)  # survives reopening
    assert len(q2) == 5
    seq = q2.peek(1)[0][0][0]
    q2.ack(seq, duplicate=True)
    assert len(q2) == 4 and q2.metrics.delivered == 1 and q2.metrics.duplicates_suppressed == 1


def test_duplicate_key_is_suppressed(tmp_path: Path) -> None:
    q = _q(tmp_path)
    assert q.enqueue("a", _meta(), b"1").queued
    dup = q.enqueue("a", _meta(), b"1")
    assert dup.duplicate and not dup.queued and len(q) == 1
    assert q.metrics.duplicates_suppressed == 1


def test_tampered_and_swapped_entries_are_reported_lost_and_the_rest_survive(
    tmp_path: Path,
) -> None:
    q = _q(tmp_path)
    for i in range(4):
        q.enqueue(f"key{i}", _meta(), b"payload%d" % i)
    db = sqlite3.connect(tmp_path / "replay.db")
    body = bytearray(
        db.execute("SELECT body FROM entries WHERE idempotency_key='key1'").fetchone()[0]
    )
    body[5] ^= 0xFF
    db.execute("UPDATE entries SET body=? WHERE idempotency_key='key1'", (bytes(body),))
    # Re-label an entry with another key: the associated data no longer matches.
    db.execute("UPDATE entries SET idempotency_key='stolen' WHERE idempotency_key='key3'")
    db.commit()
    db.close()
    entries, reports = q.peek(10)
    assert [e.idempotency_key for _, e in entries] == ["key0", "key2"]
    lost = sorted(r.idempotency_key for r in reports if r.status == "lost")
    assert lost == ["key1", "stolen"]
    assert all("authentication tag" in r.detail for r in reports)
    assert q.metrics.lost == 2 and len(q) == 2


def test_unreadable_file_is_quarantined_and_a_fresh_queue_starts(tmp_path: Path) -> None:
    q = _q(tmp_path)
    q.enqueue("a", _meta(), b"x")
    q.close()
    for p in tmp_path.iterdir():
        if p.name.startswith("replay.db"):
            p.write_bytes(os.urandom(4096))
    q2 = _q(tmp_path)
    assert len(q2) == 0 and q2.metrics.lost == 1
    assert q2.lost_reports and "unreadable" in q2.lost_reports[0].detail
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())
    assert q2.enqueue("b", _meta(), b"y").queued


def test_retention_expires_entries(tmp_path: Path) -> None:
    now = [1000.0]
    q = _q(tmp_path, retention_s=60.0, clock=lambda: now[0])
    q.enqueue("old", _meta(), b"1")
    now[0] += 61
    q.enqueue("new", _meta(), b"2")
    entries, reports = q.peek(10)
    assert [e.idempotency_key for _, e in entries] == ["new"]
    assert [(r.idempotency_key, r.status) for r in reports] == [("old", "expired")]
    assert q.metrics.expired == 1


def test_full_queue_policies(tmp_path: Path) -> None:
    q = _q(tmp_path / "a", max_entries=2)
    assert q.enqueue("1", _meta(), b"1").queued and q.enqueue("2", _meta(), b"2").queued
    assert not q.enqueue("3", _meta(), b"3").queued and q.metrics.rejected == 1
    d = _q(tmp_path / "b", max_entries=2, full_policy="drop_oldest")
    for k in "123":
        out = d.enqueue(k, _meta(), k.encode())
    assert out.queued and [r.idempotency_key for r in out.dropped] == ["1"]
    assert [e.idempotency_key for _, e in d.peek(10)[0]] == ["2", "3"]
    with pytest.raises(InvalidArgument):
        _q(tmp_path / "c", full_policy="bogus")


def test_key_loading_rules(tmp_path: Path) -> None:
    secret = os.urandom(32)
    assert parse_key(secret.hex()) == secret
    import base64

    assert parse_key(base64.b64encode(secret).decode()) == secret
    assert parse_key(secret) == secret
    (tmp_path / "data").mkdir()
    (tmp_path / "secrets").mkdir()
    queue = tmp_path / "data" / "replay.db"
    beside = tmp_path / "data" / "key"
    beside.write_bytes(secret)
    with pytest.raises(InvalidArgument, match="beside"):
        load_key(queue, None, beside, "dev-1")
    elsewhere = tmp_path / "secrets" / "key"
    elsewhere.write_text(secret.hex())
    elsewhere.chmod(0o600)
    key = load_key(queue, None, elsewhere, "dev-1")
    # derived, never the secret itself, and the same from the file or the environment
    assert len(key) == 32 and key != secret
    assert key == queue_key(secret, "dev-1") == load_key(queue, secret.hex(), None, "dev-1")
    with pytest.raises(InvalidArgument, match="needs a device secret"):
        load_key(queue, None, None, "dev-1")
    with pytest.raises(InvalidArgument):
        ReplayQueue(tmp_path / "x.db", b"short")


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (os.urandom(32).hex(), 0o644, "mode 0644: group or others may read"),
        (bytes(32).hex(), 0o600, "one byte repeated"),
        (os.urandom(8).hex(), 0o600, "8 bytes; at least 32"),
    ],
)
def test_weak_or_exposed_replay_secret_is_refused(
    tmp_path: Path, content: str, mode: int, message: str
) -> None:
    secret_file = tmp_path / "secrets" / "replay.key"
    secret_file.parent.mkdir()
    secret_file.write_text(content)
    secret_file.chmod(mode)
    with pytest.raises(InvalidArgument, match=message) as info:
        load_key(tmp_path / "q" / "replay.db", None, secret_file, "dev-1")
    assert "replay.key_file" in info.value.message


def test_a_queue_opened_under_another_device_id_reads_nothing(tmp_path: Path) -> None:
    secret = os.urandom(32)
    q = ReplayQueue(tmp_path / "q.db", queue_key(secret, "dev-a"))
    assert q.enqueue("k1", _meta(), b"payload").queued
    q.close()
    other = ReplayQueue(tmp_path / "q.db", queue_key(secret, "dev-b"))
    entries, reports = other.peek(10)
    assert entries == []
    assert [(r.idempotency_key, r.status) for r in reports] == [("k1", "lost")]
    other.close()
