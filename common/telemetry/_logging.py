"""One logging configuration for the gateway and the edge agent: JSON lines or plain text.

Every process started by ``aiml021`` calls :func:`configure_logging` once (``--log-format``). A
JSON line carries the record's time, level, logger and message, the request fields a caller
passes in ``extra`` (:data:`REQUEST_FIELDS`: request id, device, route, decision, status...) and
the current OpenTelemetry trace and span ids, so a log line leads to its trace.

Device ids never reach a log line as they are: :func:`device_pseudonym` replaces them with the
keyed pseudonym of the pseudonymiser a composition root installed (``common.privacy.configure``,
the same pseudonyms as telemetry and the metadata store); without one, a key drawn per process
is used (pseudonyms stable within one process only, never the raw id). Personal data in a
line's message and request fields is redacted before the line is written, when the process
installed an export redactor (``common.privacy.configure_export_redaction``; the gateway does
with ``privacy.dlp``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Literal, TextIO

from opentelemetry import trace

from common.privacy import Pseudonymiser, installed, redact_export

LogFormat = Literal["json", "text"]

REQUEST_FIELDS = (
    "request_id",
    "device",
    "model",
    "route",
    "decision",
    "status",
    "api",
    "region",
    "latency_ms",
)
"""Fields copied from ``extra={...}`` into a JSON line (any other extra is ignored)."""

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_process_pseudonymiser = Pseudonymiser.generate()


def device_pseudonym(device_id: str) -> str:
    """The pseudonym logged for ``device_id`` (empty stays empty)."""
    return (installed() or _process_pseudonymiser).device(device_id)


class RedactingFilter(logging.Filter):
    """Redacts personal data from a record's message and request fields (DLP on exported logs;
    a no-op until an export redactor is installed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_export(message, "log")
        if redacted != message:
            record.msg, record.args = redacted, None
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if isinstance(value, str) and value:
                record.__dict__[name] = redact_export(value, "log")
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if value is not None and value != "":
                out[name] = value
        span = trace.get_current_span().get_span_context()
        if "trace_id" in record.__dict__:  # a span written after the fact names itself
            out["trace_id"] = record.__dict__["trace_id"]
            out["span_id"] = record.__dict__.get("span_id", "")
        elif span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(
    fmt: LogFormat | None = None,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    *,
    access: bool | None = None,
) -> logging.Handler:
    """Install one handler on the root logger (replacing any earlier one of ours).

    ``fmt`` None reads ``AIML021_LOG_FORMAT`` (``json`` or ``text``, default text); ``access``
    (None: ``AIML021_ACCESS_LOG`` = 1) turns on one line per request (logger
    ``aiml021.access``), off by default: at thousands of requests a second it is a lot of text.
    Returns the handler (tests read it)."""
    fmt = fmt or _format_from_env()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    handler.set_name("aiml021")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "aiml021":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if access is None:
        access = os.environ.get("AIML021_ACCESS_LOG", "") in ("1", "true", "yes")
    logging.getLogger("aiml021.access").setLevel(logging.INFO if access else logging.WARNING)
    return handler


def _format_from_env() -> LogFormat:
    value = os.environ.get("AIML021_LOG_FORMAT", "text").strip().lower()
    if value not in ("json", "text"):
        raise ValueError(f"AIML021_LOG_FORMAT must be json or text, not {value!r}")
    return "json" if value == "json" else "text"


__all__ = [
    "REQUEST_FIELDS",
    "JsonFormatter",
    "LogFormat",
    "RedactingFilter",
    "configure_logging",
    "device_pseudonym",
]
