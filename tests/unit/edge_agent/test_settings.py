"""The edge settings tree: sections, validation that names the key, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument
from common.settings import settings_table
from edge_agent import EdgeSettings


def test_gateway_without_tls_or_insecure_is_refused_naming_both_keys() -> None:
    with pytest.raises(InvalidArgument, match=r"tls\.dir .*tls\.insecure"):
        EdgeSettings.load(overrides={"gateway": "gw:1"})
    assert EdgeSettings.load(overrides={"gateway": "gw:1", "tls": {"insecure": True}}).gateway


def test_backoff_ceiling_below_its_start_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=r"session\.backoff_max_s"):
        EdgeSettings.load(overrides={"session": {"backoff_initial_s": 2, "backoff_max_s": 1}})


def test_docs_list_every_key_of_the_tree() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "edge_agent.md").read_text()
    embedded = (
        doc.split("<!-- settings-table:")[1].split("-->", 1)[1].split("<!-- /settings-table")[0]
    )
    assert embedded.strip() == settings_table(EdgeSettings).strip(), (
        "docs/edge_agent.md is stale: paste common.settings.settings_table(EdgeSettings)"
    )
