"""The PII scanner: checksums separate real identifiers from look-alikes; redaction keeps text
readable and reports what it removed."""

from __future__ import annotations

import pytest

from common.privacy import KINDS, PiiScanner, Redactor

SCAN = PiiScanner()


@pytest.mark.parametrize(
    ("text", "kind", "found"),
    [
        (
            "write to bob.smith+tag@mail.example.co.uk today",
            "email",
            "bob.smith+tag@mail.example.co.uk",
        ),
        ("visa 4111 1111 1111 1111 exp 12/29", "payment_card", "4111 1111 1111 1111"),
        ("amex 3782-822463-10005", "payment_card", "3782-822463-10005"),
        ("pay DE89 3704 0044 0532 0130 00 now", "iban", "DE89 3704 0044 0532 0130 00"),
        ("GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("call +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
        ("office (415) 555-2671", "phone", "(415) 555-2671"),
        ("client 203.0.113.7 connected", "ip_address", "203.0.113.7"),
        ("v6 2001:db8::8a2e:370:7334 up", "ip_address", "2001:db8::8a2e:370:7334"),
    ],
)
def test_each_kind_is_found_exactly(text: str, kind: str, found: str) -> None:
    findings = SCAN.find(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, found)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # Luhn fails
        "iban DE89 3704 0044 0532 0130 01",  # mod-97 fails
        "order 1234567 of 2026-11-30, version 1.2.3, at 12:30:45",
        "ts 1700000000000 digest 8f14e45fceea167a5a36dedd4bea2543",
        "host 999.1.1.1 and not@an-email",
        "cut1|int8|zstd model fmnist_branchy v3 route edge_fallback",
    ],
)
def test_look_alikes_are_not_flagged(text: str) -> None:
    assert SCAN.find(text) == []


def test_redaction_replaces_each_finding_with_its_kind() -> None:
    text = "Bob <bob@example.com>, card 4111111111111111, +1 415 555 2671"
    redacted, findings = SCAN.redact(text)
    assert redacted == "Bob <[EMAIL]>, card [PAYMENT_CARD], [PHONE]"
    assert [f.kind for f in findings] == ["email", "payment_card", "phone"]
    assert SCAN.redact("nothing here") == ("nothing here", [])


def test_redactor_walks_nested_values_and_reports_counts() -> None:
    seen: list[tuple[str, dict[str, int]]] = []
    r = Redactor(SCAN, lambda where, counts: seen.append((where, dict(counts))))
    value = {"note": "a@b.io and c@d.io", "bob@example.com": [1, "4111111111111111"], "n": 3}
    out = r.value(value, "telemetry")
    assert out == {"note": "[EMAIL] and [EMAIL]", "[EMAIL]": [1, "[PAYMENT_CARD]"], "n": 3}
    assert ("telemetry", {"email": 2}) in seen and ("telemetry", {"payment_card": 1}) in seen


def test_kinds_can_be_narrowed_and_unknown_ones_are_refused() -> None:
    only_mail = PiiScanner(kinds=["email"])
    assert [f.kind for f in only_mail.find("a@b.io 4111111111111111")] == ["email"]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PiiScanner(kinds=["ssn"])
    assert set(KINDS) == {"email", "phone", "payment_card", "iban", "ip_address"}


def test_hostile_huge_value_is_scanned_within_a_bound() -> None:
    text = ("x" * 100 + " ") * 20_000 + "a@b.io"  # 2 MB: past the scan bound
    assert SCAN.find(text) == []
    assert SCAN.find("1" * 5000) == []  # a wall of digits is no card


def test_identifiers_with_digit_runs_are_not_personal_data() -> None:
    # Request ids and digests are hex: digits glued to letters are never a card or a phone.
    for ident in ("a4111111111111111f", "req4155552671x", "8f14e45f-4111111111111111-ab"):
        assert SCAN.find(ident) == [], ident
    import uuid

    ids = [uuid.uuid4().hex for _ in range(2000)]
    assert [i for i in ids if SCAN.find(i)] == []
