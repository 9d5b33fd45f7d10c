"""Keyed device pseudonyms: stable under one key, unlinkable across keys, never the raw id."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from common.errors import InvalidArgument
from common.privacy import (
    Pseudonymiser,
    configure,
    is_pseudonym,
    parse_pseudonym_key,
    pseudonymise_device,
)

KEY = bytes(range(32))


def test_same_device_same_key_gives_the_same_pseudonym() -> None:
    a, b = Pseudonymiser(KEY), Pseudonymiser(KEY)
    assert a.device("cam-17") == b.device("cam-17")
    assert is_pseudonym(a.device("cam-17"))
    assert a.device("cam-17") != a.device("cam-18")


def test_pseudonym_hides_the_id_and_is_not_a_plain_hash() -> None:
    p = Pseudonymiser(KEY).device("cam-17")
    assert "cam-17" not in p
    # An attacker hashing guessed ids without the key cannot find it.
    assert p[4:] not in hashlib.sha256(b"cam-17").hexdigest()
    assert p[4:] not in hashlib.sha256(b"device|cam-17").hexdigest()


def test_rotating_the_key_unlinks_pseudonyms() -> None:
    assert Pseudonymiser(KEY).device("cam-17") != Pseudonymiser.generate().device("cam-17")


def test_domains_do_not_share_pseudonyms() -> None:
    p = Pseudonymiser(KEY)
    assert p.device("x")[4:] != p.session("x")[4:]
    assert p.session("x").startswith("ses_")
    with pytest.raises(ValueError, match="domain"):
        p.pseudonym("x", "org")


def test_empty_id_stays_empty() -> None:
    assert Pseudonymiser(KEY).device("") == ""


def test_hostile_id_shaped_like_a_pseudonym_is_still_keyed() -> None:
    p = Pseudonymiser(KEY)
    victim = p.device("cam-17")
    # A device whose id is another device's pseudonym must not land on that device's records.
    assert p.device(victim) != victim


@pytest.mark.parametrize("bad", ["", "abc", "00" * 31, b"short"])
def test_bad_keys_are_rejected_with_a_hint(bad: str | bytes) -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        parse_pseudonym_key(bad)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    first = Pseudonymiser.from_file(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Pseudonymiser.from_file(path).device("d") == first.device("d")
    assert Pseudonymiser.from_text(path.read_text()).key_id == first.key_id


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"nope\.key"):
        Pseudonymiser.from_file(tmp_path / "nope.key")


def test_process_wide_pseudonymiser_never_passes_the_raw_id() -> None:
    configure(None)
    try:
        assert pseudonymise_device("cam-17") == "dev_unkeyed"
        configure(Pseudonymiser(KEY))
        assert pseudonymise_device("cam-17") == Pseudonymiser(KEY).device("cam-17")
    finally:
        configure(None)
