"""benchmarks.hostile's summary: ratios per attack and configuration over repeats."""

from __future__ import annotations

import pytest

from benchmarks.hostile.run import _env_pairs, summarise, table


def _report(name: str, unloaded: float, attack: float, rss: float = 0.0) -> dict[str, object]:
    return {"name": name, "unloaded_p99_ms": unloaded, "attack_p99_ms": attack, "wrong": 0,
            "rss_before_mb": 200.0, "rss_after_mb": 200.0 + rss, "slowdown": 1.1}  # fmt: skip


def test_ratios_are_summarised_per_attack_and_configuration() -> None:
    runs = [
        {"config": "default", "reports": [_report("flood", 4.0, 6.0), _report("ids", 5.0, 5.0)]},
        {"config": "default", "reports": [_report("flood", 5.0, 15.0, rss=3.0)]},
        {"config": "default", "reports": [_report("flood", 4.0, 7.0)]},
        {"config": "W=1", "reports": [_report("flood", 4.0, 40.0)]},
    ]
    rows = {(r["attack"], r["config"]): r for r in summarise(runs)}
    flood = rows["flood", "default"]
    assert flood["repeats"] == 3
    assert flood["ratio_median"] == pytest.approx(1.75)
    assert (flood["ratio_min"], flood["ratio_max"]) == (pytest.approx(1.5), pytest.approx(3.0))
    assert flood["within_2x"] == 2 and flood["rss_left_mb_max"] == pytest.approx(3.0)
    assert flood["added_ms_median"] == pytest.approx(3.0)
    assert rows["flood", "W=1"]["within_2x"] == 0
    assert rows["ids", "default"]["ratio_median"] == pytest.approx(1.0)
    text = table(summarise(runs))
    assert "| flood | default | 4.0 → 7.0 | 1.75× [1.50–3.00] | +3.0 | 2/3 | 0 | +3.0 |" in text


def test_baseline_settings_must_be_name_value_pairs() -> None:
    assert _env_pairs(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        _env_pairs(["A"])
