"""The daily summary (US-008): one UTC day of the metadata store, by region, mailed over SMTP.

``aiml021 report daily --metadata-url URL --smtp HOST:PORT --from A --to B`` reads the day's
requests (the gateway's own records and what devices reported) with their results and costs,
and sends one plain-text mail: requests, error share, gateway and device latency (p50/p95),
expected accuracy, offload share and cost, per region and overall.

Expected accuracy is the mean calibrated confidence of the answers: the store holds no ground
truth, and a calibrated confidence is the probability the answer is right. A request answered by
the cloud is the gateway's row (its latency is the gateway's); one answered on the device is the
device's report (its latency is end to end).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from common.errors import InvalidArgument

OFFLOADED = frozenset({"cloud", "cache", "edge_fallback", "deferred"})
"""Routes of requests the device sent (or queued) to the cloud."""

_QUERY = (
    "SELECT r.region, r.route, r.status, r.api, res.latency_ms, res.confidence, c.cost "
    "FROM requests r "
    "LEFT JOIN results res ON res.device_id = r.device_id AND res.request_id = r.request_id "
    "LEFT JOIN costs c ON c.device_id = r.device_id AND c.request_id = r.request_id "
    "WHERE r.received_at >= ? AND r.received_at < ?"
)


@dataclass(frozen=True)
class RegionSummary:
    """One region's day (``region`` ``all`` for the whole day)."""

    region: str
    requests: int
    errors: int
    offloaded: int
    gateway_p50_ms: float
    gateway_p95_ms: float
    device_p50_ms: float
    device_p95_ms: float
    expected_accuracy: float
    """Mean calibrated confidence (NaN when no answer carried one)."""
    cost: float

    @property
    def offload_share(self) -> float:
        return self.offloaded / self.requests if self.requests else math.nan

    @property
    def error_share(self) -> float:
        return self.errors / self.requests if self.requests else math.nan


@dataclass(frozen=True)
class DailySummary:
    day: datetime.date
    regions: tuple[RegionSummary, ...]
    total: RegionSummary


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(region: str, rows: Iterable[tuple[Any, ...]]) -> RegionSummary:
    """The summary of ``rows`` (region, route, status, api, latency_ms, confidence, cost)."""
    n = errors = offloaded = 0
    gateway: list[float] = []
    device: list[float] = []
    confidences: list[float] = []
    cost = 0.0
    for _, route, status, api, latency, conf, price in rows:
        n += 1
        errors += status != "OK"
        offloaded += route in OFFLOADED
        if latency is not None:
            (gateway if api else device).append(float(latency))
        if conf is not None and status == "OK":
            confidences.append(float(conf))
        cost += float(price or 0.0)
    return RegionSummary(
        region=region,
        requests=n,
        errors=errors,
        offloaded=offloaded,
        gateway_p50_ms=_percentile(gateway, 0.5),
        gateway_p95_ms=_percentile(gateway, 0.95),
        device_p50_ms=_percentile(device, 0.5),
        device_p95_ms=_percentile(device, 0.95),
        expected_accuracy=sum(confidences) / len(confidences) if confidences else math.nan,
        cost=cost,
    )


async def daily_summary(backend: Any, day: datetime.date) -> DailySummary:
    """Summarise ``day`` (UTC) from a metadata backend (``cloud.stores.metadata_backend``)."""
    start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
    rows = await backend.query(_QUERY, (start, start + 86400.0))
    by_region: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_region.setdefault(row[0] or "unspecified", []).append(row)
    regions = tuple(summarise(r, by_region[r]) for r in sorted(by_region))
    return DailySummary(day, regions, summarise("all", rows))


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def render(summary: DailySummary) -> str:
    """The mail body: a fixed-width table, one line per region and one for the day."""
    head = (
        f"{'region':<16}{'requests':>9}{'errors':>8}{'offload':>9}{'gw p50':>9}{'gw p95':>9}"
        f"{'dev p50':>9}{'dev p95':>9}{'exp.acc':>9}{'cost':>12}"
    )
    lines = [
        f"aiml021 daily summary for {summary.day.isoformat()} (UTC)",
        "",
        head,
        "-" * len(head),
    ]
    for s in (*summary.regions, summary.total):
        if s is summary.total:
            lines.append("-" * len(head))
        lines.append(
            f"{s.region[:15]:<16}{s.requests:>9}{_fmt(s.error_share, '.1%'):>8}"
            f"{_fmt(s.offload_share, '.1%'):>9}{_fmt(s.gateway_p50_ms, '.1f'):>9}"
            f"{_fmt(s.gateway_p95_ms, '.1f'):>9}{_fmt(s.device_p50_ms, '.1f'):>9}"
            f"{_fmt(s.device_p95_ms, '.1f'):>9}{_fmt(s.expected_accuracy, '.1%'):>9}"
            f"{s.cost:>12.4f}"
        )
    lines += [
        "",
        "latency in ms: gw = the gateway's time for cloud answers, dev = devices' end-to-end "
        "time for answers they gave themselves",
        "exp.acc = mean calibrated confidence (no ground truth is recorded)",
        "offload = share of requests sent to the cloud (answered there, from its cache, too late, "
        "or queued offline)",
        "cost in the price table's currency (stores.prices)",
    ]
    return "\n".join(lines) + "\n"


def message(summary: DailySummary, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The summary as a mail."""
    msg = EmailMessage()
    msg["Subject"] = f"aiml021 daily summary {summary.day.isoformat()}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg.set_content(render(summary))
    return msg


def send(
    msg: EmailMessage,
    host: str,
    port: int,
    *,
    starttls: bool = False,
    user: str = "",
    password: str = "",
    timeout_s: float = 30.0,
) -> None:
    """Deliver ``msg`` over SMTP (STARTTLS with the system's CA store when asked)."""
    with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
        if starttls:
            smtp.starttls(context=ssl.create_default_context())
        if user:
            smtp.login(user, password)
        smtp.send_message(msg)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(f"--smtp: expected HOST:PORT, got {text!r}")
    return host, int(port)


def _day(text: str | None) -> datetime.date:
    if text is None:  # yesterday, UTC: the last whole day
        return datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"--day: expected YYYY-MM-DD, got {text!r}") from None


async def _run(args: argparse.Namespace) -> int:
    from cloud.stores import metadata_backend

    if args.metadata_url == "none":
        raise InvalidArgument("--metadata-url: the summary reads the metadata store; none given")
    host_port = None if args.smtp is None else _address(args.smtp)
    if host_port is not None and not args.to:
        raise InvalidArgument("--to: at least one recipient is needed with --smtp")
    backend = metadata_backend(args.metadata_url)
    try:
        summary = await daily_summary(backend, _day(args.day))
    finally:
        await backend.close()
    if host_port is None:
        print(render(summary), end="")
        return 0
    msg = message(summary, args.sender, args.to)
    await asyncio.to_thread(
        send,
        msg,
        *host_port,
        starttls=args.starttls,
        user=args.user,
        password=os.environ.get("AIML021_SMTP_PASSWORD", ""),
    )
    print(f"sent the summary of {summary.day.isoformat()} to {', '.join(args.to)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report daily``."""
    p = subparsers.add_parser("report", help="operational reports (daily summary mail)")
    sub = p.add_subparsers(dest="report", metavar="REPORT", required=True)
    d = sub.add_parser(
        "daily",
        help="mail one day's latency, accuracy, offload and cost by region",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    d.add_argument(
        "--metadata-url",
        default="sqlite:///aiml021-metadata.sqlite3",
        help="the gateway's metadata store (stores.metadata_url)",
    )
    d.add_argument("--day", help="UTC day YYYY-MM-DD (default: yesterday)")
    d.add_argument("--smtp", help="SMTP server HOST:PORT; without it the summary is printed")
    d.add_argument("--from", dest="sender", default="aiml021@localhost", help="sender address")
    d.add_argument("--to", action="append", default=[], help="recipient (repeatable)")
    d.add_argument("--starttls", action="store_true", help="upgrade the SMTP connection to TLS")
    d.add_argument("--user", default="", help="SMTP login (password: $AIML021_SMTP_PASSWORD)")
    d.set_defaults(func=lambda args: asyncio.run(_run(args)))


__all__ = [
    "OFFLOADED",
    "DailySummary",
    "RegionSummary",
    "daily_summary",
    "message",
    "register",
    "render",
    "send",
    "summarise",
]
