"""The gateway's privacy controls against a real SQLite metadata store and the real gateway:
pseudonymised device ids, redacted PII with its metric, forget with a tombstone, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from cloud._privacy import GatewayPrivacySettings, PrivacySink
from cloud._privacy_forget import TOMBSTONES, forget_device
from cloud.core import RequestRecord, TelemetryEvent
from cloud.stores import (
    DeviceSeen,
    MetadataWriter,
    SessionEvent,
    SqliteMetadataBackend,
    audit_backend,
    verify,
)
from common.cli import build_parser
from common.errors import InvalidArgument
from common.privacy import Pseudonymiser, is_pseudonym

KEY = "11" * 32
P = Pseudonymiser.from_text(KEY)


def _record(i: int, device: str = "cam-1", **kw: object) -> RequestRecord:
    base: dict[str, object] = {
        "request_id": f"r{i}",
        "device_id": device,
        "model_name": "m",
        "model_version": "1",
        "route": "cloud",
        "status": "OK",
        "session_id": "sess-1",
        "top_class": 3,
        "confidence": 0.9,
        "latency_ms": 4.0,
        "bytes_in": 100,
    }
    return RequestRecord(**{**base, **kw})  # type: ignore[arg-type]


def main(argv: list[str]) -> int:
    """Run an ``aiml021`` command in process (without main's logging set-up)."""
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args))


def _findings(kind: str, where: str) -> float:
    return (
        REGISTRY.get_sample_value("aiml021_dlp_findings_total", {"kind": kind, "where": where})
        or 0.0
    )


async def _store(tmp_path: Path, records: list[object]) -> SqliteMetadataBackend:
    settings = GatewayPrivacySettings(pseudonym_key=KEY)
    db = SqliteMetadataBackend(tmp_path / "meta.sqlite3")
    writer = MetadataWriter(db, flush_interval_s=0.01)
    sink = PrivacySink(writer, settings.pseudonymiser(), settings.redactor())
    await writer.start()
    for r in records:
        sink(r)
    await writer.stop()
    return db


async def test_stored_records_hold_pseudonyms_and_no_pii(tmp_path: Path) -> None:
    before = _findings("email", "request_record"), _findings("payment_card", "telemetry")
    db = await _store(
        tmp_path,
        [
            DeviceSeen("cam-1", "cpu"),
            SessionEvent("sess-1", "cam-1", 1.0),
            _record(1, idempotency_key="dev-026-1234", offload_reason="ask bob@example.com"),
            _record(2, idempotency_key="dev-027-1234"),
            TelemetryEvent(
                "cam-1", "t1", "m", "edge", 0, 0.01, 10, 20, cut_point="paid 4111 1111 1111 1111"
            ),
        ],
    )
    rows = []
    for table in ("devices", "sessions", "requests", "results", "costs"):
        rows += await db.query(f"SELECT * FROM {table}")
    dump = "\n".join(map(str, rows))
    assert "cam-1" not in dump and "sess-1" not in dump
    assert "bob@example.com" not in dump and "4111 1111" not in dump
    devices = {r[0] for r in await db.query("SELECT DISTINCT device_id FROM requests")}
    assert devices == {P.device("cam-1")} and all(is_pseudonym(d) for d in devices)
    # Request ids and idempotency keys are text the client chose: kept as keyed pseudonyms,
    # never redacted (two phone-like keys would both become "dev-[PHONE]": one key).
    keys = await db.query(
        "SELECT request_id, idempotency_key, offload_reason FROM requests "
        "WHERE request_id IN (?, ?)",
        (P.request("r1"), P.request("r2")),
    )
    assert sorted(keys) == sorted(
        [
            (P.request("r1"), P.idempotency("dev-026-1234"), "ask [EMAIL]"),
            (P.request("r2"), P.idempotency("dev-027-1234"), ""),
        ]
    )
    assert "dev-02" not in dump and all(is_pseudonym(k) for _, k, _ in keys)
    stored = {r[0] for r in await db.query("SELECT request_id FROM requests")}
    assert P.request("r1") in stored and all(is_pseudonym(r) for r in stored)
    # The results still join on the pseudonym: analytics keep working.
    joined = await db.query("SELECT r.top_class FROM requests q JOIN results r USING (device_id)")
    assert joined and joined[0][0] == 3
    assert _findings("email", "request_record") == before[0] + 1
    assert _findings("payment_card", "telemetry") == before[1] + 1
    await db.close()


async def test_forget_removes_every_row_and_leaves_a_tombstone_without_the_id(
    tmp_path: Path,
) -> None:
    db = await _store(tmp_path, [DeviceSeen("cam-1"), *[_record(i) for i in range(3)],
                                 _record(9, device="cam-2")])  # fmt: skip
    await db.close()
    path = tmp_path / "meta.sqlite3"
    # A table another component added later is covered too (found by its device_id column).
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE drift_samples (device_id TEXT, value REAL)")
        conn.execute("INSERT INTO drift_samples VALUES (?, 1.0)", (P.device("cam-1"),))
        conn.execute("INSERT INTO drift_samples VALUES ('cam-1', 2.0)")  # written before pseudonyms
    report = await forget_device(
        "cam-1", metadata_url=f"sqlite:///{path}", pseudonymiser=P, actor="dpo@example"
    )
    assert report.rows["requests"] == 3 and report.rows["devices"] == 1
    assert report.rows["drift_samples"] == 2 and report.subject == P.device("cam-1")
    with sqlite3.connect(path) as conn:
        left = {r[0] for r in conn.execute("SELECT device_id FROM requests")}
        assert left == {P.device("cam-2")}  # the other device is untouched
        assert conn.execute("SELECT COUNT(*) FROM drift_samples").fetchone() == (0,)
        (stone,) = conn.execute(f"SELECT subject, actor, detail FROM {TOMBSTONES}").fetchall()
    assert stone[0] == P.device("cam-1") and stone[1] == "dpo@example"
    assert json.loads(stone[2])["rows"]["requests"] == 3
    assert "cam-1" not in json.dumps(stone)
    again = await forget_device("cam-1", metadata_url=f"sqlite:///{path}", pseudonymiser=P)
    assert sum(again.rows.values()) == 0  # idempotent: nothing left, one more tombstone
    # Each erasure is also an event in the hash-chained audit log, which still verifies.
    audit = audit_backend(f"sqlite:///{path}")
    events = [r for r in await audit.rows() if r.action == "privacy.forget"]
    assert [(e.principal, e.resource) for e in events] == [
        ("dpo@example", P.device("cam-1")),
        ("cli", P.device("cam-1")),
    ]
    assert report.tombstone_id in events[0].detail and "cam-1" not in str(events)
    assert (await verify(audit)).ok
    await audit.close()


async def test_forget_refuses_a_missing_database_instead_of_creating_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await forget_device("cam-1", metadata_url=f"sqlite:///{tmp_path}/nope.sqlite3")
    with pytest.raises(ValueError, match="device id"):
        await forget_device("", metadata_url=None)


def test_privacy_settings_refuse_unknown_kinds_and_two_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dlp_kinds"):
        GatewayPrivacySettings(dlp_kinds=["ssn"])
    with pytest.raises(ValueError, match="not both"):
        GatewayPrivacySettings(pseudonym_key=KEY, pseudonym_key_file=tmp_path / "k")
    assert GatewayPrivacySettings(dlp=False).redactor() is None
    assert GatewayPrivacySettings().pseudonymiser() is None


def test_cli_keys_scan_and_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ring = tmp_path / "ring.json"
    assert main(["privacy", "keys", "new", "--file", str(ring), "--id", "k1"]) == 0
    assert main(["privacy", "keys", "rotate", "--file", str(ring), "--id", "k2"]) == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert shown == {"file": str(ring), "primary": "k2", "keys": ["k2", "k1"]}
    with pytest.raises(InvalidArgument, match="rotate"):
        main(["privacy", "keys", "new", "--file", str(ring)])  # refuses to overwrite
    capsys.readouterr()
    text = tmp_path / "ocr.json"
    text.write_text(json.dumps({"lines": [{"text": "call +44 20 7946 0958"}, {"text": "SN 1234"}]}))
    assert main(["privacy", "scan", "--json", str(text)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"lines": [{"text": "call [PHONE]"}, {"text": "SN 1234"}]}
    assert json.loads(out.err.splitlines()[-1]) == {"findings": {"phone": 1}}
    ledger = tmp_path / "ledger.json"
    from common.privacy import GaussianMechanism, PrivacyAccountant

    acc = PrivacyAccountant(1e-5, state_path=ledger)
    acc.charge(GaussianMechanism(2.0, 1e-5, 1.0))
    assert main(["privacy", "budget", str(ledger)]) == 0
    spent = json.loads(capsys.readouterr().out)
    assert spent["epsilon"] == pytest.approx(acc.spent())


async def test_cli_forget_uses_the_gateway_settings(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    await _make_db(db)
    env = {
        **os.environ,
        "AIML021_GATEWAY_STORES__METADATA_URL": f"sqlite:///{db}",
        "AIML021_GATEWAY_PRIVACY__PSEUDONYM_KEY": KEY,
    }
    cmd = [sys.executable, "-m", "common.cli", "privacy", "forget", "cam-1", "--actor", "t-42"]
    done = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["rows"]["requests"] == 1 and report["subject"] == P.device("cam-1")
    env["AIML021_GATEWAY_PRIVACY__DLP_KINDS"] = '["ssn"]'
    bad = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "dlp_kinds" in bad.stderr


async def _make_db(path: Path) -> None:
    db = SqliteMetadataBackend(path)
    await db.migrate()
    settings = GatewayPrivacySettings(pseudonym_key=KEY)
    writer = MetadataWriter(db, flush_interval_s=0.01)
    await writer.start()
    PrivacySink(writer, settings.pseudonymiser(), None)(_record(1))
    await writer.stop()
    await db.close()


def test_audit_names_devices_by_pseudonym_and_operators_by_name(tmp_path: Path) -> None:
    from cloud._privacy import PseudonymousAudit
    from cloud.app import Gateway
    from cloud.core import AuditEvent, Role
    from tests.support.gateway import GatedBackend, gateway_settings

    seen: list[AuditEvent] = []
    audit = PseudonymousAudit(seen.append, P)
    audit(AuditEvent("cam-1", Role.DEVICE.value, "acme", "/x/Deploy", "m", "PERMISSION_DENIED"))
    audit(AuditEvent("alice", "Operator", "acme", "POST /v1/deploy", "m", "OK"))
    assert [e.principal for e in seen] == [P.device("cam-1"), "alice"]
    settings = gateway_settings(tmp_path, privacy={"pseudonym_key": KEY})
    gw = Gateway(settings, GatedBackend(), audit=seen.append)
    assert isinstance(gw.audit, PseudonymousAudit)
    # DLP (on by default) reaches the audit log too: what a caller wrote into an event.
    seen.clear()
    dlp = Gateway(gateway_settings(tmp_path), GatedBackend(), audit=seen.append)
    dlp.audit(AuditEvent("anonymous", "", "", "/x/Infer", "bob@example.com", "NOT_FOUND",
                         "no model 'bob@example.com' (+44 20 7946 0958)"))  # fmt: skip
    assert seen[0].resource == "[EMAIL]"
    assert "[EMAIL]" in seen[0].detail and "[PHONE]" in seen[0].detail
    assert "bob@" not in seen[0].detail and "7946" not in seen[0].detail
    plain = Gateway(
        gateway_settings(tmp_path, privacy={"dlp": False}), GatedBackend(), audit=seen.append
    )
    assert plain.audit == seen.append


async def test_forget_finds_rows_recorded_under_a_rotated_out_pseudonym_key(
    tmp_path: Path,
) -> None:
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_text("44" * 32)
    new_key.write_text("55" * 32)
    db = SqliteMetadataBackend(tmp_path / "meta.sqlite3")
    writer = MetadataWriter(db, flush_interval_s=0.01)
    await writer.start()
    for key, i in ((old_key, 1), (new_key, 2)):  # the gateway before and after the rotation
        PrivacySink(writer, Pseudonymiser.from_file(key), None)(_record(i))
    await writer.stop()
    await db.close()
    url = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    current = GatewayPrivacySettings(pseudonym_key_file=new_key)
    # Without the retired key the old rows are out of reach...
    alone = await forget_device("cam-1", metadata_url=url, pseudonymiser=current.pseudonymiser())
    assert alone.rows["requests"] == 1
    # ... with it (privacy.retired_pseudonym_key_files) they go too.
    s = GatewayPrivacySettings(pseudonym_key_file=new_key, retired_pseudonym_key_files=[old_key])
    both = await forget_device(
        "cam-1", metadata_url=url, pseudonymiser=s.pseudonymiser(),
        retired_pseudonymisers=s.retired_pseudonymisers(),
    )  # fmt: skip
    assert both.rows["requests"] == 1
    with sqlite3.connect(tmp_path / "meta.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone() == (0,)
