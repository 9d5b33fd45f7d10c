"""What every attack test asserts around its attack: the legitimate device's p99 and answers,
and the gateway's memory, before and after."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.adversarial._served import Probe, ServedGateway, latency_bound, p99

log = logging.getLogger(__name__)

RSS_SLACK_MB = 50.0
"""RSS after an attack may exceed the baseline by this much (the issue's bound)."""
MAX_ATTACK_S = 10.0


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

    def __str__(self) -> str:
        return (
            f"[{self.name}] probe p99 {self.unloaded_p99_ms:.1f} ms unloaded -> "
            f"{self.attack_p99_ms:.1f} ms under attack -> {self.after_p99_ms:.1f} ms after "
            f"(bound {self.bound_ms:.1f} ms, "
            f"{self.answers} answers, {self.wrong} wrong); RSS {self.rss_before_mb:.0f} MB -> "
            f"peak {self.rss_peak_mb:.0f} -> {self.rss_after_mb:.0f} MB after; "
            f"attack {self.attack_s:.1f} s"
        )


@contextmanager
def under_attack(
    name: str, gw: ServedGateway, legit: Probe, baseline_s: float = 2.0
) -> Iterator[AttackReport]:
    """Measure the unloaded baseline, run the ``with`` body (the attack), then assert: the
    legitimate device got only correct answers with p99 within :func:`latency_bound` of its
    unloaded p99 (the larger of the p99 before and after the attack: other processes on this
    shared box change its load while a test runs, and the attack's effect is gone after it), the
    attack took at most :data:`MAX_ATTACK_S`, and the gateway's RSS came back
    within :data:`RSS_SLACK_MB` of where it was."""
    unloaded = legit.measure(baseline_s)
    report = AttackReport(name, p99(unloaded) * 1e3, rss_before_mb=gw.rss_mb())
    start = time.monotonic()
    yield report
    end = time.monotonic()
    report.attack_s = end - start
    report.rss_peak_mb = max(report.rss_peak_mb, gw.rss_mb())
    legit.wait_answered(end)
    during = legit.window(start, end)
    report.answers = len(during)
    report.wrong = sum(not s.ok for s in during)
    report.attack_p99_ms = p99(during) * 1e3
    report.after_p99_ms = p99(legit.measure(baseline_s)) * 1e3
    baseline = max(report.unloaded_p99_ms, report.after_p99_ms)
    report.bound_ms = latency_bound(baseline / 1e3) * 1e3
    report.rss_after_mb = gw.settled_rss_mb(report.rss_before_mb + RSS_SLACK_MB)
    print(report)
    assert gw.alive(), "the gateway died"
    assert report.wrong == 0, f"the legitimate device got {report.wrong} wrong answers: {report}"
    assert report.attack_p99_ms <= report.bound_ms, str(report)
    assert report.rss_after_mb <= report.rss_before_mb + RSS_SLACK_MB, str(report)
    assert report.attack_s <= MAX_ATTACK_S + 1.0, str(report)


__all__ = ["MAX_ATTACK_S", "RSS_SLACK_MB", "AttackReport", "under_attack"]
