"""The daily summary (US-008): one UTC day of a real SQLite metadata store, by region, mailed by
``aiml021 report daily`` to a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from cloud._report import daily_summary, render
from cloud.core import RequestRecord, TelemetryEvent
from cloud.stores import PriceTable, SqliteMetadataBackend
from cloud.stores._records import Record, telemetry_record
from common.cli import main
from tests.support.ports import free_port

DAY = datetime.date(2026, 11, 29)
NOON = datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.UTC).timestamp()


class _Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    loop = asyncio.new_event_loop()  # ours, so that it is closed (Controller leaves it open)
    controller = Controller(inbox, hostname="127.0.0.1", port=port, loop=loop)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
        loop.close()


def _cloud(
    i: int, region: str, latency_ms: float, status: str = "OK", at: float = NOON
) -> RequestRecord:
    return RequestRecord(
        request_id=f"c{i}-{region}-{at}",
        device_id=f"cam-{i}",
        model_name="fmnist_branchy.cut1",
        model_version="1",
        route="cloud",
        status=status,
        api="session",
        bytes_in=4000,
        bytes_out=40,
        compute_s=0.002 if status == "OK" else 0.0,
        confidence=0.9 if status == "OK" else None,
        top_class=3 if status == "OK" else None,
        latency_ms=latency_ms,
        recorded_at=at,
        region=region,
    )


def _edge(i: int, region: str, total_s: float) -> RequestRecord:
    rec = telemetry_record(
        TelemetryEvent(
            device_id=f"cam-{i}",
            request_id=f"e{i}-{region}",
            model_name="fmnist_branchy",
            route="edge",
            total_s=total_s,
            confidence=0.7,
            region=region,
        )
    )
    rec.recorded_at = NOON + 60
    return rec


async def _store(path: Path) -> None:
    db = SqliteMetadataBackend(path, PriceTable(per_compute_hour=3600.0))  # 1 per compute second
    await db.migrate()
    records: list[Record] = [_cloud(i, "eu-west", latency_ms=10.0 + i) for i in range(10)]
    records.append(_cloud(99, "eu-west", latency_ms=5.0, status="RESOURCE_EXHAUSTED"))
    records += [_edge(i, "ap-south", total_s=0.004) for i in range(30)]
    records.append(_cloud(7, "ap-south", latency_ms=50.0))
    records.append(_cloud(8, "eu-west", 10.0, at=NOON + 86400))  # the next day: not counted
    await db.write(records)
    await db.close()


async def test_the_summary_splits_latency_accuracy_offload_and_cost_by_region(
    tmp_path: Path,
) -> None:
    path = tmp_path / "meta.sqlite3"
    await _store(path)
    db = SqliteMetadataBackend(path)
    summary = await daily_summary(db, DAY)
    await db.close()
    eu, ap = (
        next(r for r in summary.regions if r.region == name) for name in ("eu-west", "ap-south")
    )
    assert (eu.requests, eu.errors, eu.offloaded) == (11, 1, 11)
    assert eu.gateway_p50_ms == pytest.approx(14.0)  # latencies 5 (refused), 10..19
    assert eu.expected_accuracy == pytest.approx(0.9)
    assert eu.cost == pytest.approx(10 * 0.002)  # ten computed requests, 2 ms each
    assert (ap.requests, ap.offloaded) == (31, 1) and ap.offload_share == pytest.approx(1 / 31)
    assert ap.device_p95_ms == pytest.approx(4.0) and ap.gateway_p50_ms == pytest.approx(50.0)
    assert ap.expected_accuracy == pytest.approx((30 * 0.7 + 0.9) / 31)
    assert summary.total.requests == 42  # the next day's request is not in it
    text = render(summary)
    assert "ap-south" in text and "eu-west" in text and "2026-11-29" in text


async def test_report_daily_mails_the_summary_over_smtp(
    tmp_path: Path, smtp: tuple[_Inbox, int]
) -> None:
    path = tmp_path / "meta.sqlite3"
    await _store(path)
    inbox, port = smtp
    argv = [
        "report", "daily", "--metadata-url", f"sqlite:///{path}", "--day", "2026-11-29",
        "--smtp", f"127.0.0.1:{port}", "--from", "aiml021@example.com",
        "--to", "ops@example.com", "--to", "pm@example.com",
    ]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    ((sender, rcpts, raw),) = inbox.mails
    assert sender == "aiml021@example.com" and rcpts == ["ops@example.com", "pm@example.com"]
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert mail["Subject"] == "aiml021 daily summary 2026-11-29"
    body = mail.get_content()
    eu_line = next(line for line in body.splitlines() if line.startswith("eu-west"))
    assert eu_line.split()[:4] == ["eu-west", "11", "9.1%", "100.0%"]
    total = next(line for line in body.splitlines() if line.startswith("all"))
    assert total.split()[1] == "42"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtp", "nohostport"], "--smtp: expected HOST:PORT"),
        (["--smtp", "127.0.0.1:99999", "--to", "x@y"], "--smtp: expected HOST:PORT"),
        (["--smtp", "127.0.0.1:25"], "--to: at least one recipient"),
        (["--day", "yesterday"], "--day: expected YYYY-MM-DD"),
        (["--metadata-url", "none"], "--metadata-url"),
    ],
)
async def test_bad_arguments_are_refused_with_a_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    # main runs its own event loop (asyncio.run): in a thread, apart from the test's loop
    argv = ["report", "daily", "--metadata-url", url, *args]
    assert await asyncio.to_thread(main, argv) == 1
    assert message in capsys.readouterr().err
