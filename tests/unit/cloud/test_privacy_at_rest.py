"""Encryption at rest of the metadata database (real SQLite files): content columns kept only
sealed, rotation by re-sealing every row (the CLI) before the old key retires, and every way a
row can be tampered with refused with a precise reason; ``privacy.required`` refusing to start
a gateway that would keep raw ids or clear content."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cloud._privacy import GatewayPrivacySettings, PrivacySink
from cloud._privacy_keys import reseal
from cloud._report import daily_summary
from cloud.core import RequestRecord
from cloud.stores import MetadataWriter, SessionEvent, SqliteMetadataBackend
from cloud.stores._sealed_rows import RowSealer
from common.cli import build_parser
from common.errors import DataLoss, InvalidArgument
from common.privacy import KeyRing, Pseudonymiser
from common.privacy._sealing import MAGIC

KEY = "33" * 32
P = Pseudonymiser.from_text(KEY)
NOW = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC).timestamp()


def main(argv: list[str]) -> int:
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args))


async def cli(*argv: str) -> int:
    """Run an ``aiml021`` command in process, off the test's event loop (it runs its own)."""
    return await asyncio.to_thread(main, list(argv))


def _record(i: int, device: str = "cam-1") -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", device_id=device, model_name="m", model_version="1",
        route="cloud", status="OK", api="infer", session_id="s1", top_class=7,
        confidence=0.8, latency_ms=5.0, idempotency_key=f"invoice-{i} for Jane Roe",
        offload_reason="low confidence on the passport photo", recorded_at=NOW,
    )  # fmt: skip


async def _write(path: Path, ring: KeyRing, records: list[object]) -> None:
    db = SqliteMetadataBackend(path, keyring=ring)
    writer = MetadataWriter(db, flush_interval_s=0.01)
    sink = PrivacySink(writer, P, None)
    await writer.start()
    for r in records:
        sink(r)
    await writer.stop()
    await db.close()


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def _dump(path: Path) -> str:
    return "\n".join(
        str(_rows(path, f"SELECT * FROM {t}")) for t in ("requests", "results", "sessions")
    )


async def test_content_columns_are_kept_only_sealed_and_aggregates_still_work(
    tmp_path: Path,
) -> None:
    path, ring = tmp_path / "m.sqlite3", KeyRing.generate("k1")
    session = SessionEvent("s1", "cam-1", NOW, NOW + 1, "client said: Jane Roe")
    await _write(path, ring, [SessionEvent("s1", "cam-1", NOW), _record(1), _record(2), session])
    dump = _dump(path)
    assert "Jane Roe" not in dump and "passport" not in dump and "invoice" not in dump
    assert _rows(path, "SELECT DISTINCT top_class FROM results") == [(None,)]
    sealer = RowSealer(ring)
    for device, request, sealed in _rows(path, "SELECT device_id, request_id, sealed FROM results"):
        assert base64.b64decode(sealed).startswith(MAGIC)
        assert sealer.open("results", (device, request), sealed, {}) == {"top_class": 7}
    ((device, request, sealed),) = _rows(
        path,
        f"SELECT device_id, request_id, sealed FROM requests WHERE request_id = '{P.request('r1')}'",
    )
    assert sealer.open("requests", (device, request), sealed, {}) == {
        "idempotency_key": P.idempotency("invoice-1 for Jane Roe"),  # an id: its pseudonym
        "offload_reason": "low confidence on the passport photo",
    }
    ((sid, sealed),) = _rows(path, "SELECT session_id, sealed FROM sessions")
    assert sealer.open("sessions", (sid,), sealed, {}) == {"end_reason": "client said: Jane Roe"}
    # What stays clear is what the daily summary aggregates: it still reads the day.
    db = SqliteMetadataBackend(path)
    day = await daily_summary(db, datetime.date(2026, 11, 30))
    assert day.total.requests == 2 and day.total.expected_accuracy == pytest.approx(0.8)
    await db.close()


async def test_reseal_moves_every_row_to_the_new_key_before_the_old_one_retires(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, ring_file = tmp_path / "m.sqlite3", tmp_path / "ring.json"
    url = f"sqlite:///{path}"
    assert await cli("privacy", "keys", "new", "--file", str(ring_file), "--id", "k1") == 0
    await _write(path, KeyRing.load(ring_file), [_record(i) for i in range(3)])
    assert await cli("privacy", "keys", "rotate", "--file", str(ring_file), "--id", "k2") == 0
    await _write(path, KeyRing.load(ring_file), [_record(9)])  # new rows: under k2 at once
    capsys.readouterr()
    # The old key still opens its rows, so it cannot be retired yet: 6 rows depend on it.
    with pytest.raises(InvalidArgument, match=r"'k1' still seals 6 stored value"):
        await cli("privacy", "keys", "retire", "--file", str(ring_file), "--id", "k1",
              "--metadata-url", url)  # fmt: skip
    assert (
        await cli("privacy", "keys", "reseal", "--file", str(ring_file), "--metadata-url", url) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["resealed"] == {"requests": 3, "results": 3}
    assert out["key_ids"] == {"k2": 8} and out["unreadable"] == []
    assert await cli("privacy", "keys", "retire", "--file", str(ring_file), "--id", "k1",
                 "--metadata-url", url) == 0  # fmt: skip
    ring = KeyRing.load(ring_file)
    assert ring.key_ids == ["k2"]
    sealer = RowSealer(ring)
    for device, request, sealed in _rows(
        path, "SELECT device_id, request_id, sealed FROM requests"
    ):
        assert sealer.open("requests", (device, request), sealed, {})["idempotency_key"]
    # Idempotent: a second run has nothing to do.
    report = await reseal(ring, metadata_url=url)
    assert not report.resealed and report.key_ids == {"k2": 8}


async def test_tampered_moved_foreign_and_clear_rows_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, ring = tmp_path / "m.sqlite3", KeyRing.generate("k1")
    await _write(path, ring, [_record(i) for i in range(6)])
    rid = [P.request(f"r{i}") for i in range(6)]
    dev = P.device("cam-1")
    with sqlite3.connect(path) as conn:
        sealed = dict(conn.execute("SELECT request_id, sealed FROM requests"))
        blob = bytearray(base64.b64decode(sealed[rid[0]]))
        blob[-1] ^= 1  # one bit of the tag
        conn.execute("UPDATE requests SET sealed = ? WHERE request_id = ?",
                     (base64.b64encode(bytes(blob)).decode(), rid[0]))  # fmt: skip
        # Another row's seal copied over (an attacker relabelling one device's content).
        conn.execute(
            "UPDATE requests SET sealed = ? WHERE request_id = ?", (sealed[rid[2]], rid[1])
        )
        # Sealed under a key this ring does not hold.
        foreign = RowSealer(KeyRing.generate("k9")).seal(
            "requests", (dev, rid[2]), {"idempotency_key": "", "offload_reason": ""}
        )
        conn.execute("UPDATE requests SET sealed = ? WHERE request_id = ?", (foreign, rid[2]))
        conn.execute("UPDATE requests SET sealed = 'not base64!' WHERE request_id = ?", (rid[3],))
        # Clear text planted next to a valid seal.
        conn.execute(
            "UPDATE requests SET offload_reason = 'planted' WHERE request_id = ?", (rid[4],)
        )
        # A row written around the gateway, in the clear.
        conn.execute(
            "INSERT INTO requests (device_id, request_id, model_name, model_version, route, "
            "status, idempotency_key, received_at) VALUES (?, 'x1', 'm', '1', 'cloud', 'OK', "
            "'injected by hand', 0)", (dev,)
        )  # fmt: skip
    rotated = ring.rotated("k2")
    ring_file = tmp_path / "ring.json"
    rotated.save(ring_file)
    code = await cli("privacy", "keys", "reseal", "--file", str(ring_file),
                 "--metadata-url", f"sqlite:///{path}")  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    reasons = "\n".join(out["unreadable"])
    assert len(out["unreadable"]) == 6, reasons
    assert reasons.count("failed authentication") == 2  # the flipped bit, the copied seal
    assert (
        f"({dev}, {rid[2]}): sealed under key 'k9', which the key ring no longer holds" in reasons
    )
    assert "sealed column is not base64" in reasons
    assert "content in clear column(s) ['offload_reason']" in reasons
    assert f"requests row ({dev}, x1) is not sealed" in reasons
    # Every healthy row moved on (the results rows and request r5); the bad ones are left as
    # they were, for someone to look at.
    assert out["resealed"] == {"requests": 1, "results": 6}
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT offload_reason, idempotency_key FROM requests WHERE request_id IN (?, 'x1') "
            "ORDER BY request_id", (rid[4],)
        ).fetchall() == [("planted", ""), ("", "injected by hand")]  # fmt: skip
    # The same refusals reading one row directly: DataLoss, never a crash or plaintext.
    sealer = RowSealer(rotated)
    with pytest.raises(DataLoss, match="failed authentication"):
        sealer.open("requests", (dev, rid[1]), sealed[rid[2]], {})
    with pytest.raises(DataLoss, match="is not sealed"):
        sealer.open("requests", (dev, "x1"), "", {"idempotency_key": "injected by hand"})
    # An operator who knows the clear row predates encryption adopts it explicitly.
    report = await reseal(rotated, metadata_url=f"sqlite:///{path}", seal_clear=True)
    assert report.adopted == {"requests": 1}
    with sqlite3.connect(path) as conn:
        ((idem, adopted),) = conn.execute(
            "SELECT idempotency_key, sealed FROM requests WHERE request_id = 'x1'"
        ).fetchall()
    assert idem == ""
    assert sealer.open("requests", (dev, "x1"), adopted, {})["idempotency_key"] == (
        "injected by hand"
    )


def test_required_privacy_refuses_to_start_without_every_key(tmp_path: Path) -> None:
    # The settings name every missing protection when they load...
    with pytest.raises(ValueError, match=r"privacy.required: no privacy.pseudonym_key_file.*"
                                         r"no privacy.at_rest_key_file"):  # fmt: skip
        GatewayPrivacySettings(required=True)
    ring, key = tmp_path / "ring.json", tmp_path / "pseudonym.key"
    with pytest.raises(ValueError, match=r"privacy\.dlp is off"):
        GatewayPrivacySettings(
            required=True, pseudonym_key_file=key, at_rest_key_file=ring, dlp=False
        )
    # ... and the key files are checked when the gateway starts (a manifest can name secrets
    # that are mounted only in the cluster).
    s = GatewayPrivacySettings(required=True, pseudonym_key_file=key, at_rest_key_file=ring)
    KeyRing.generate().save(ring)
    with pytest.raises(
        InvalidArgument, match=r"privacy.pseudonym_key_file .*pseudonym.key: No such"
    ):
        s.check_keys()
    key.write_text(KEY)
    key.chmod(0o644)
    with pytest.raises(
        InvalidArgument, match=r"pseudonym_key_file .* has mode 0644: group or others may read"
    ):
        s.check_keys()
    key.chmod(0o600)
    ring.write_text("{}")
    with pytest.raises(InvalidArgument, match="not a key ring file"):
        s.check_keys()
    KeyRing.generate().save(ring)
    s.check_keys()
    assert s.unprotected() == [] and s.keyring() is not None
    # The gateway runs the check before it opens a store or binds a port.
    from cloud.app import Gateway
    from tests.support.gateway import GatedBackend, gateway_settings

    key.chmod(0o640)
    settings = gateway_settings(
        tmp_path, privacy={"required": True, "pseudonym_key_file": key, "at_rest_key_file": ring}
    )
    with pytest.raises(InvalidArgument, match="mode 0640"):
        Gateway.from_settings(settings)
    with pytest.raises(InvalidArgument, match="mode 0640"):
        Gateway(settings, GatedBackend())
    key.chmod(0o600)
    assert isinstance(Gateway(settings, GatedBackend()), Gateway)


def test_a_gateway_that_keeps_raw_ids_says_so_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cloud.app import Gateway
    from cloud.stores import build_stores
    from tests.support.gateway import GatedBackend, gateway_settings

    settings = gateway_settings(tmp_path, stores={"metadata_url": f"sqlite:///{tmp_path}/m.db"})
    stores = build_stores(settings.stores)
    assert stores.metadata is not None
    with caplog.at_level(logging.WARNING, logger="cloud.app"):
        Gateway(settings, GatedBackend(), stores=stores)
    said = caplog.text
    assert "raw device ids" in said and "not encrypted at rest" in said
    assert "privacy.required=true refuses to start" in said
