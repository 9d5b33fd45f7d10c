"""DLP on what leaves a process: with an export redactor installed (the gateway installs one
with ``privacy.dlp``), personal data in log lines (message and request fields, JSON and text)
and in exported spans (attributes, events, status) is redacted and counted; without one, text
passes unchanged."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from prometheus_client import REGISTRY

from cloud._privacy import count_findings
from common.privacy import (
    PiiScanner,
    Redactor,
    configure_export_redaction,
    export_redactor,
    redact_export,
)
from common.telemetry import configure_logging, configure_tracing, shutdown_tracing, tracer

PII = "order of bob@example.com, card 4111 1111 1111 1111"


def _found(kind: str, where: str) -> float:
    labels = {"kind": kind, "where": where}
    return REGISTRY.get_sample_value("aiml021_dlp_findings_total", labels) or 0.0


@pytest.fixture
def redactor() -> Iterator[Redactor]:
    r = Redactor(PiiScanner(), count_findings)
    configure_export_redaction(r)
    yield r
    configure_export_redaction(None)


def _log_line(fmt: str) -> str:
    out = io.StringIO()
    handler = configure_logging(fmt, stream=out)  # type: ignore[arg-type]
    try:
        logging.getLogger("t").warning("refused: %s", PII, extra={"request_id": PII})
    finally:
        logging.getLogger().removeHandler(handler)
    return out.getvalue()


def test_log_lines_leave_without_personal_data(redactor: Redactor) -> None:
    before = _found("email", "log")
    line = json.loads(_log_line("json"))
    assert line["message"] == "refused: order of [EMAIL], card [PAYMENT_CARD]"
    assert line["request_id"] == "order of [EMAIL], card [PAYMENT_CARD]"
    text = _log_line("text")
    assert "bob@" not in text and "4111" not in text and "[EMAIL]" in text
    assert _found("email", "log") == before + 4  # message and request id, twice


def test_exported_spans_leave_without_personal_data(redactor: Redactor) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("t", exporter=exporter)
    try:
        with tracer("t").start_as_current_span(
            "req", attributes={"aiml021.request_id": PII, "aiml021.bytes": 12}
        ) as span:
            span.add_event("retry", {"why": "call +44 20 7946 0958"})
            span.set_status(Status(StatusCode.ERROR, f"no model for {PII}"))
    finally:
        shutdown_tracing()
    (done,) = exporter.get_finished_spans()
    assert done.attributes == {
        "aiml021.request_id": "order of [EMAIL], card [PAYMENT_CARD]",
        "aiml021.bytes": 12,
    }
    assert done.events[0].attributes == {"why": "call [PHONE]"}
    assert done.status.description == "no model for order of [EMAIL], card [PAYMENT_CARD]"
    assert done.context.trace_id != 0 and done.name == "req"


def test_without_a_redactor_text_passes_unchanged() -> None:
    assert export_redactor() is None
    assert redact_export(PII, "log") == PII
    assert "bob@example.com" in json.loads(_log_line("json"))["message"]


def test_the_gateway_installs_the_redactor_with_dlp(tmp_path: Path) -> None:
    from cloud.app import Gateway
    from tests.support.gateway import GatedBackend, gateway_settings

    try:
        Gateway(gateway_settings(tmp_path), GatedBackend())
        assert redact_export(PII, "log") == "order of [EMAIL], card [PAYMENT_CARD]"
        Gateway(gateway_settings(tmp_path, privacy={"dlp": False}), GatedBackend())
        assert export_redactor() is None
    finally:
        configure_export_redaction(None)


def test_this_hosts_own_addresses_are_not_personal_data() -> None:
    scan = PiiScanner()
    assert scan.find("listening on 127.0.0.1:8001, 0.0.0.0:8080 and [::1]:9") == []
    assert [f.kind for f in scan.find("peer 10.1.2.3 refused")] == ["ip_address"]
