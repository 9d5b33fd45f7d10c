"""The policy the gateway serves: from the policy settings section, else from a served bundle's
manifest through policy.profile_from_manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud._policy import gateway_policy
from common.bundle import load_bundle
from policy import HeuristicPolicy, LinUCBPolicy, profile_from_manifest
from policy._settings import PolicySettings
from tests.support.edge_bundle import make_bundle


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_bundle(root / "a", thresholds=(0.8, 0.7, 0.0))
    make_bundle(root / "b", thresholds=(0.6, 0.5, 0.0))
    return root


def test_default_is_the_heuristic_over_the_first_bundles_manifest(models: Path) -> None:
    served = gateway_policy(models)
    assert isinstance(served, HeuristicPolicy)
    assert served.thresholds == [0.8, 0.7, 0.0]
    assert served.profile == profile_from_manifest(load_bundle(models / "a").manifest)


def test_kind_and_bundle_come_from_the_settings(models: Path) -> None:
    served = gateway_policy(models, settings=PolicySettings(kind="linucb", bundle="b"))
    assert isinstance(served, LinUCBPolicy)
    assert [e.threshold for e in served.profile.exits] == [0.6, 0.5, 0.0]
    assert isinstance(gateway_policy(models, "b"), HeuristicPolicy)


def test_a_profile_setting_needs_no_bundle(models: Path, tmp_path: Path) -> None:
    path = tmp_path / "profile.json"
    profile = profile_from_manifest(load_bundle(models / "b").manifest)
    path.write_text(json.dumps(profile.to_dict()))
    served = gateway_policy(tmp_path / "nothing", settings=PolicySettings(profile=path))
    assert isinstance(served, HeuristicPolicy) and served.profile == profile


def test_no_bundle_no_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert gateway_policy(tmp_path / "missing") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{}")
    assert gateway_policy(tmp_path) is None
    assert "no policy from" in caplog.text
