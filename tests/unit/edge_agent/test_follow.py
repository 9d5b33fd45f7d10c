"""Following an assignment is configured precisely: a bucket needs a device directory and a
readable Ed25519 key, and a device restarted after a swap runs the bundle it swapped to."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.artifacts import generate_signing_key
from common.errors import InvalidArgument
from edge_agent import EdgeAgent, EdgeSettings
from edge_agent._follow import bundle_updater
from tests.support.edge_bundle import make_bundle


def test_a_bucket_without_a_device_directory_is_refused_naming_the_key() -> None:
    with pytest.raises(InvalidArgument, match=r"artifacts\.root"):
        EdgeSettings.load(overrides={"artifacts": {"bucket": "b"}})
    assert bundle_updater(EdgeSettings()) is None  # off by default


def test_a_missing_or_foreign_verify_key_is_refused_naming_the_key(tmp_path: Path) -> None:
    settings = EdgeSettings.load(
        overrides={
            "artifacts": {
                "bucket": "b",
                "root": str(tmp_path / "dev"),
                "verify_key": str(tmp_path / "none.pub"),
            }
        }
    )
    with pytest.raises(InvalidArgument, match=r"artifacts\.verify_key"):
        bundle_updater(settings)
    (tmp_path / "rsa.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n")
    settings.artifacts.verify_key = tmp_path / "rsa.pub"
    with pytest.raises(InvalidArgument, match=r"artifacts\.verify_key"):
        bundle_updater(settings)


def test_an_agent_restarted_after_a_swap_runs_the_installed_bundle(tmp_path: Path) -> None:
    generate_signing_key(tmp_path / "k.key", tmp_path / "k.pub")
    shipped = make_bundle(tmp_path / "shipped", seed=0)
    installed = make_bundle(tmp_path / "dev" / "versions" / "synthetic_branchy-9", seed=9)
    (tmp_path / "dev" / "current").symlink_to(Path("versions") / installed.name)
    settings = EdgeSettings.load(
        overrides={
            "bundle": str(shipped),
            "artifacts": {
                "bucket": "b",
                "root": str(tmp_path / "dev"),
                "verify_key": str(tmp_path / "k.pub"),
                "endpoint": "http://127.0.0.1:9",
            },
        }
    )
    agent = EdgeAgent(settings)
    assert agent.bundle.root.resolve() == installed.resolve()
    assert agent.model_version == agent.bundle.manifest.version
