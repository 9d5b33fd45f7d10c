"""AES-256-GCM sealing under a rotatable key ring."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.errors import DataLoss, InvalidArgument
from common.privacy import KeyRing, is_sealed


def test_sealed_value_opens_and_hides_the_plaintext() -> None:
    ring = KeyRing.generate("k1")
    blob = ring.seal(b"top_class=7 confidence=0.93", b"aiml021:cache:x")
    assert is_sealed(blob) and b"top_class" not in blob
    assert ring.key_id_of(blob) == "k1"
    assert ring.open(blob, b"aiml021:cache:x") == b"top_class=7 confidence=0.93"
    assert ring.seal(b"same", b"") != ring.seal(b"same", b"")  # fresh nonce each time


def test_rotation_seals_under_the_new_key_and_old_values_still_open() -> None:
    old = KeyRing.generate("k1")
    blob = old.seal(b"before rotation")
    new = old.rotated("k2")
    assert new.primary == "k2" and new.key_ids == ["k2", "k1"]
    assert new.open(blob) == b"before rotation"
    assert new.key_id_of(new.seal(b"after")) == "k2"
    resealed = new.reseal(blob)
    assert new.key_id_of(resealed) == "k2" and new.open(resealed) == b"before rotation"
    retired = new.without("k1")
    with pytest.raises(DataLoss, match="no longer holds"):
        retired.open(blob)
    with pytest.raises(InvalidArgument, match="primary"):
        new.without("k2")


def test_moved_altered_or_foreign_values_fail_authentication() -> None:
    ring = KeyRing.generate("k1")
    blob = bytearray(ring.seal(b"answer", b"key-a"))
    with pytest.raises(DataLoss, match="authentication"):
        ring.open(bytes(blob), b"key-b")  # copied under another store key
    blob[-1] ^= 1
    with pytest.raises(DataLoss, match="authentication"):
        ring.open(bytes(blob), b"key-a")
    with pytest.raises(DataLoss, match="not sealed"):
        ring.open(b'{"plaintext": true}')
    with pytest.raises(DataLoss, match="truncated"):
        ring.open(bytes(blob[:10]))
    # The key id in the header is authenticated: relabelling a value breaks it.
    other = KeyRing({"k1": os.urandom(32), "k2": os.urandom(32)}, "k2")
    forged = bytes(blob).replace(b"k1", b"k2", 1)
    with pytest.raises(DataLoss):
        other.open(forged, b"key-a")


def test_ring_file_round_trips_private_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    ring = KeyRing.generate("k1").rotated("k2")
    ring.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = KeyRing.load(path)
    assert loaded.key_ids == ["k2", "k1"] and loaded.open(ring.seal(b"x")) == b"x"
    path.write_text('{"primary": "k9", "keys": {}}')
    with pytest.raises(InvalidArgument, match="primary key 'k9'"):
        KeyRing.load(path)
    path.write_text("not json")
    with pytest.raises(InvalidArgument, match=r"ring\.json"):
        KeyRing.load(path)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        KeyRing({"k": b"short"}, "k")
    with pytest.raises(InvalidArgument, match="key id"):
        KeyRing({"bad id!": os.urandom(32)}, "bad id!")
