"""The harness itself: the served gateway answers the legitimate device correctly, over mTLS,
and its memory can be read; an attack-free window passes the attack checks."""

from __future__ import annotations

from tests.adversarial._attack import under_attack
from tests.adversarial._served import Probe, ServedGateway


def test_quiet_window_passes_every_attack_check(served: ServedGateway, legit: Probe) -> None:
    with under_attack("nothing", served, legit) as report:
        samples = legit.measure(1.0)
    assert samples and all(s.ok for s in samples)
    assert 50 < report.rss_before_mb < 2000
