"""Data-loss prevention: find and redact personal data in text before it is stored or exported.

What it finds, each confirmed by more than a pattern where a check exists:

- ``email``: RFC 5322-ish local part, ``@``, a dotted domain with a 2+ letter top-level label;
- ``phone``: numbers Google's libphonenumber (``phonenumbers``) accepts as *valid* for their
  country: international ``+CC`` numbers anywhere, national formats for ``phone_regions``;
- ``payment_card``: 13-19 digits (spaces or dashes allowed) with a valid Luhn check digit and a
  known issuer prefix (``python-stdnum``'s Luhn);
- ``iban``: country code, check digits and BBAN whose ISO 13616 mod-97 checksum and national
  length hold (``python-stdnum``);
- ``ip_address``: IPv4 dotted quads and IPv6 addresses that parse (``ipaddress``), except the
  loopback and unspecified addresses.

presidio-analyzer was tried first: its ``AnalyzerEngine`` needs a spaCy model it downloads at run
time (impossible offline) and its pattern recognisers drag spaCy and a newer pydantic into the
environment; the libraries it relies on for the checks (libphonenumber, checksum validation) are
used here directly.

Redaction replaces each finding with ``[KIND]`` (``[EMAIL]``, ``[PHONE]``...), so the text stays
readable and what was removed stays countable.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EMAIL = "email"
PHONE = "phone"
PAYMENT_CARD = "payment_card"
IBAN = "iban"
IP_ADDRESS = "ip_address"
KINDS = (EMAIL, PHONE, PAYMENT_CARD, IBAN, IP_ADDRESS)

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
# Cards and phones stand as tokens of their own: digits glued to letters (hex digests, uuids,
# serials) are identifiers, not personal data.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
# Issuer prefixes (IIN ranges) of the networks a card number can belong to.
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|6(?:011|5|4[4-9]|22)|35|62|8[1-8])")
_MAX_TEXT = 1 << 20  # scanning is linear, but a bound keeps one hostile value cheap


@dataclass(frozen=True)
class Finding:
    """One piece of personal data in a text: its kind and ``text[start:end]``."""

    kind: str
    start: int
    end: int


def _luhn_card(digits: str) -> bool:
    from stdnum import luhn

    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn.is_valid(digits)


def _iban(text: str) -> bool:
    from stdnum import iban

    return bool(iban.is_valid(text))


def _iban_in(m: re.Match[str]) -> Finding | None:
    """The longest prefix of a spaced match that is a valid IBAN (the pattern also swallows a
    following word, "DE89 ... 00 now")."""
    text = m.group()
    cut = len(text)
    while cut >= 15:
        if _iban(text[:cut]):
            return Finding(IBAN, m.start(), m.start() + cut)
        space = text.rfind(" ", 0, cut)
        if space < 0:
            return None
        cut = space
    return None


# How card numbers are printed: contiguous, or in these groups (Visa/Mastercard/Discover 4-4-4-4
# and 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4, 13-digit Visa 4-4-5).
_CARD_GROUPS = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 5)}


def _card_layout(text: str) -> bool:
    groups = tuple(len(g) for g in re.split(r"[ -]", text))
    return len(groups) == 1 or groups in _CARD_GROUPS


def _glued(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` touches a letter or digit on either side."""
    return (start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum())


def _ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    # This host (127.0.0.1, ::1) and "any address" (0.0.0.0) identify no one: a gateway's own
    # listening address in a log line is not personal data.
    return not (address.is_loopback or address.is_unspecified)


class PiiScanner:
    """Finds personal data of ``kinds`` in text; ``phone_regions`` are the countries whose
    national phone formats count (international ``+`` numbers always do)."""

    def __init__(
        self, kinds: Iterable[str] = KINDS, phone_regions: Iterable[str] = ("US", "GB", "DE", "FR")
    ) -> None:
        self.kinds = frozenset(kinds)
        unknown = self.kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(KINDS)}")
        self.phone_regions = tuple(phone_regions)

    def find(self, text: str) -> list[Finding]:
        """Findings in ``text``, in order, without overlaps (the earlier, then longer, wins)."""
        text = text[:_MAX_TEXT]
        found: list[Finding] = []
        if EMAIL in self.kinds and "@" in text:
            found += [Finding(EMAIL, m.start(), m.end()) for m in _EMAIL.finditer(text)]
        if IBAN in self.kinds:
            found += [f for m in _IBAN.finditer(text) if (f := _iban_in(m)) is not None]
        if PAYMENT_CARD in self.kinds:
            for m in _CARD.finditer(text):
                if _card_layout(m.group()) and _luhn_card(re.sub(r"[ -]", "", m.group())):
                    found.append(Finding(PAYMENT_CARD, m.start(), m.end()))
        if IP_ADDRESS in self.kinds:
            for pattern in (_IPV4, _IPV6):
                found += [
                    Finding(IP_ADDRESS, m.start(), m.end())
                    for m in pattern.finditer(text)
                    if _ip(m.group())
                ]
        if PHONE in self.kinds:
            found += self._phones(text)
        found.sort(key=lambda f: (f.start, -(f.end - f.start)))
        out: list[Finding] = []
        for f in found:
            if out and f.start < out[-1].end:
                continue
            out.append(f)
        return out

    def _phones(self, text: str) -> list[Finding]:
        if sum(c.isdigit() for c in text) < 7:
            return []
        import phonenumbers

        spans: dict[tuple[int, int], Finding] = {}
        for region in self.phone_regions or (None,):
            for m in phonenumbers.PhoneNumberMatcher(
                text, region, leniency=phonenumbers.Leniency.VALID
            ):
                if _glued(text, m.start, m.end):
                    continue
                spans.setdefault((m.start, m.end), Finding(PHONE, m.start, m.end))
        return list(spans.values())

    def redact(self, text: str) -> tuple[str, list[Finding]]:
        """``text`` with every finding replaced by ``[KIND]``, and the findings."""
        findings = self.find(text)
        if not findings:
            return text, []
        parts, pos = [], 0
        for f in findings:
            parts += [text[pos : f.start], f"[{f.kind.upper()}]"]
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts), findings


@dataclass
class Redactor:
    """Redacts strings inside values (str, or mappings/lists of them, recursively) and reports
    what it removed to ``on_findings(where, counts_by_kind)`` (a metric)."""

    scanner: PiiScanner
    on_findings: Callable[[str, Mapping[str, int]], None] | None = None

    def text(self, value: str, where: str) -> str:
        """``value`` redacted; findings reported under ``where``."""
        redacted, findings = self.scanner.redact(value)
        if findings and self.on_findings is not None:
            self.on_findings(where, Counter(f.kind for f in findings))
        return redacted

    def value(self, value: Any, where: str) -> Any:
        """Strings anywhere in ``value`` redacted (mapping keys included)."""
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, Mapping):
            return {self.value(k, where): self.value(v, where) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v, where) for v in value)
        return value


__all__ = [
    "EMAIL",
    "IBAN",
    "IP_ADDRESS",
    "KINDS",
    "PAYMENT_CARD",
    "PHONE",
    "Finding",
    "PiiScanner",
    "Redactor",
]
