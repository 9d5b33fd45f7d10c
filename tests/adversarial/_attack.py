"""What every attack test asserts around its attack: the legitimate device's p99 and answers,
and the gateway's memory, before and after."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.adversarial._served import Probe, ServedGateway, latency_bound, p99

log = logging.getLogger(__name__)

RSS_SLACK_MB = 50.0
"""RSS after an attack may exceed the baseline by this much (the issue's bound)."""
MAX_ATTACK_S = 10.0
PAUSE_SETTLE_S = 0.3
"""The start of an :meth:`AttackReport.pause` that is not counted as quiet."""
REPORTS_ENV = "AIML021_ATTACK_REPORTS"
"""A file each attack's :class:`AttackReport` is appended to as a JSON line, before its
assertions (``python -m benchmarks.hostile`` sets it: keep the name in step with its
``REPORTS_ENV``)."""
MAX_DRIFT_MS = 250.0
"""The baseline measured after the attack and between its rounds counts up to this much (the
box's load drifts by tens of ms); a stall longer than that during the attack's pauses or after
it is the attack's doing, so the bound never grows past 2x this."""


@dataclass
class AttackReport:
    """Numbers of one attack, printed by the test (``pytest -s``) and asserted on."""

    name: str
    unloaded_p99_ms: float
    after_p99_ms: float = 0.0
    """The legitimate device's p99 once the attack is over (the box's load may have changed)."""
    attack_p99_ms: float = 0.0
    bound_ms: float = 0.0
    answers: int = 0
    wrong: int = 0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0
    attack_s: float = 0.0
    quiet: list[tuple[float, float]] = field(default_factory=list)
    """Pauses of the attack (:meth:`pause`): their samples are a baseline measured in the same
    run, between the attack's rounds, not attack samples."""
    quiet_p99_ms: float = 0.0
    slowdown: float = 1.0
    """(ran + waited for a CPU) / ran of the gateway's event loop during the attack."""

    async def pause(self, seconds: float) -> None:
        """Stop attacking for ``seconds`` between rounds; the legitimate device's latency meanwhile
        joins the unloaded baseline (the box's load drifts while a test runs: a baseline taken
        between the rounds sees the same drift as the rounds)."""
        start = time.monotonic()
        await asyncio.sleep(seconds)
        # The first requests of a pause may still wait behind the round's tail: not a baseline.
        self.quiet.append((start + min(PAUSE_SETTLE_S, seconds / 3), time.monotonic()))

    def __str__(self) -> str:
        quiet = f", {self.quiet_p99_ms:.1f} ms between rounds" if self.quiet else ""
        return (
            f"[{self.name}] probe p99 {self.unloaded_p99_ms:.1f} ms unloaded -> "
            f"{self.attack_p99_ms:.1f} ms under attack -> {self.after_p99_ms:.1f} ms after{quiet} "
            f"(bound {self.bound_ms:.1f} ms, "
            f"{self.answers} answers, {self.wrong} wrong); RSS {self.rss_before_mb:.0f} MB -> "
            f"peak {self.rss_peak_mb:.0f} -> {self.rss_after_mb:.0f} MB after; "
            f"attack {self.attack_s:.1f} s, event loop slowdown {self.slowdown:.2f}"
        )


@contextmanager
def under_attack(
    name: str, gw: ServedGateway, legit: Probe, baseline_s: float = 2.0
) -> Iterator[AttackReport]:
    """Measure the unloaded baseline, run the ``with`` body (the attack), then assert: the
    legitimate device got only correct answers with p99 within :func:`latency_bound` (the noise
    floor stretched by the event loop's measured wait for a CPU) of its
    unloaded p99 (the largest of the p99 before the attack, after it and in the attack's
    :meth:`AttackReport.pause` windows, the last two counted up to :data:`MAX_DRIFT_MS`: other
    processes on this shared box change its load while a test runs), the attack took at most
    :data:`MAX_ATTACK_S` (pauses included), and the gateway's RSS came back within
    :data:`RSS_SLACK_MB` of where it was."""
    unloaded = legit.measure(baseline_s)
    report = AttackReport(name, p99(unloaded) * 1e3, rss_before_mb=gw.rss_mb())
    run0, wait0 = gw.cpu_ns()
    start = time.monotonic()
    yield report
    end = time.monotonic()
    run1, wait1 = gw.cpu_ns()
    report.slowdown = 1 + (wait1 - wait0) / max(run1 - run0, 1)
    report.attack_s = end - start
    report.rss_peak_mb = max(report.rss_peak_mb, gw.rss_mb())
    legit.wait_answered(end)
    window = legit.window(start, end)
    report.wrong = sum(not s.ok for s in window)

    def paused(sent: float) -> bool:
        return any(a <= sent < b for a, b in report.quiet)

    during = [s for s in window if not paused(s.sent)]
    report.answers = len(during)
    report.attack_p99_ms = p99(during) * 1e3
    report.after_p99_ms = p99(legit.measure(baseline_s)) * 1e3
    drifted = report.after_p99_ms
    if report.quiet:
        report.quiet_p99_ms = p99([s for s in window if paused(s.sent)]) * 1e3
        drifted = max(drifted, report.quiet_p99_ms)
    baseline = max(report.unloaded_p99_ms, min(drifted, MAX_DRIFT_MS))
    report.bound_ms = latency_bound(baseline / 1e3, report.slowdown) * 1e3
    report.rss_after_mb = gw.settled_rss_mb(report.rss_before_mb + RSS_SLACK_MB)
    print(report)
    if reports := os.environ.get(REPORTS_ENV):
        with open(reports, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dataclasses.asdict(report)) + "\n")
    assert gw.alive(), "the gateway died"
    assert report.wrong == 0, f"the legitimate device got {report.wrong} wrong answers: {report}"
    assert report.attack_p99_ms <= report.bound_ms, str(report)
    assert report.rss_after_mb <= report.rss_before_mb + RSS_SLACK_MB, str(report)
    assert report.attack_s <= MAX_ATTACK_S + 1.0, str(report)


__all__ = [
    "MAX_ATTACK_S",
    "MAX_DRIFT_MS",
    "REPORTS_ENV",
    "RSS_SLACK_MB",
    "AttackReport",
    "under_attack",
]
