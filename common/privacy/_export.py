"""DLP on what a process exports: log lines and trace spans leave the process (shipped to a log
store, an OpenTelemetry collector) carrying text callers chose — request ids, model names, error
messages that quote a request. A composition root installs one :class:`Redactor` here
(:func:`configure_export_redaction`); the logging handler and the span exporter of
``common.telemetry`` pass every string through :func:`redact_export` before it leaves. Without
one installed, text passes unchanged (processes that export nothing a caller wrote).
"""

from __future__ import annotations

import threading

from ._dlp import Redactor

_lock = threading.Lock()
_redactor: Redactor | None = None


def configure_export_redaction(redactor: Redactor | None) -> None:
    """Install the redactor for exported logs and spans (None removes it)."""
    global _redactor
    with _lock:
        _redactor = redactor


def export_redactor() -> Redactor | None:
    """The installed export redactor, if any."""
    return _redactor


def redact_export(value: str, where: str) -> str:
    """``value`` with personal data redacted (``where``: ``log`` or ``trace``, the DLP metric's
    label); unchanged when no redactor is installed or ``value`` is empty."""
    r = _redactor
    return r.text(value, where) if r is not None and value else value


__all__ = ["configure_export_redaction", "export_redactor", "redact_export"]
