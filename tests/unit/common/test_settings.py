"""The layered settings loader: flags > env > config file > defaults, and every unknown or
invalid key, wherever it comes from, is an error that names it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.errors import InvalidArgument
from common.settings import TREE_CONFIG, LayeredSettings, Section, given, nest, unknown_key


class _Server(Section):
    host: str = "default"
    """Bind address."""
    port: int = Field(default=1, ge=0)
    """Port."""


class _Tree(LayeredSettings):
    model_config = SettingsConfigDict(env_prefix="T_TREE_", **TREE_CONFIG)
    retired_env: ClassVar[dict[str, str]] = {"T_OLD_": "T_TREE_SERVER__*"}
    foreign_env: ClassVar[frozenset[str]] = frozenset({"T_OLD_VENV"})
    renamed: ClassVar[dict[str, str]] = {"port": "server.port"}

    name: str = "default"
    """A top-level key."""
    server: _Server = Field(default_factory=_Server)
    """A section."""


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_flags_beat_env_beat_file_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _toml(tmp_path, 'name = "file"\n[server]\nhost = "file"\nport = 3\n')
    assert _Tree.load().server.host == "default"
    s = _Tree.load(f)
    assert (s.name, s.server.host, s.server.port) == ("file", "file", 3)
    monkeypatch.setenv("T_TREE_SERVER__HOST", "env")
    s = _Tree.load(f)
    assert (s.name, s.server.host, s.server.port) == ("file", "env", 3)
    s = _Tree.load(f, nest({"server.host": "flag"}))
    assert (s.name, s.server.host, s.server.port) == ("file", "flag", 3)


def test_flags_left_at_none_override_nothing() -> None:
    args = argparse.Namespace(host="flag", port=None)
    assert given(args, {"host": "server.host", "port": "server.port"}) == {
        "server": {"host": "flag"}
    }


def test_json_file_has_the_same_shape(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"server": {"port": 9}}))
    assert _Tree.load(p).server.port == 9


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nprot = 1\n", "'server.prot'"),
        ("nmae = 1\n", "'nmae'"),
        ("[name]\nx = 1\n", "'name.x'"),  # a leaf given as a table
        ("port = 1\n", "renamed to 'server.port'"),
    ],
)
def test_a_wrong_key_in_the_file_is_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown key") as err:
        _Tree.load(_toml(tmp_path, text))
    assert named in err.value.message and "c.toml" in err.value.message


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ("T_TREE_SERVER__PROT", "T_TREE_SERVER__PROT: unknown setting 'server.prot'"),
        ("T_TREE_NMAE", "T_TREE_NMAE: unknown setting 'nmae'"),
        ("T_TREE_PORT", "renamed to 'server.port'"),
        ("T_OLD_HOST", "T_OLD_HOST is no longer read: use T_TREE_SERVER__*"),
    ],
)
def test_a_wrong_env_var_is_named(monkeypatch: pytest.MonkeyPatch, env: str, named: str) -> None:
    monkeypatch.setenv(env, "1")
    with pytest.raises(InvalidArgument) as err:
        _Tree.load()
    assert named in err.value.message


def test_foreign_env_under_a_retired_prefix_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_OLD_VENV", "/somewhere")
    assert _Tree.load().name == "default"


def test_invalid_values_name_key_and_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidArgument, match=r"server\.port \(T_TREE_SERVER__PORT\)"):
        _Tree.load(overrides={"server": {"port": -1}})
    with pytest.raises(InvalidArgument, match=r"server\.port \(T_TREE_SERVER__PORT\)"):
        _Tree.load(_toml(tmp_path, "[server]\nport = 'x'\n"))
    with pytest.raises(InvalidArgument, match=r"server\.bogus"):
        _Tree.load(overrides={"server": {"bogus": 1}})


def test_unreadable_or_malformed_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"missing\.toml"):
        _Tree.load(tmp_path / "missing.toml")
    with pytest.raises(InvalidArgument, match=r"c\.toml"):
        _Tree.load(_toml(tmp_path, "[server\n"))
    bad = tmp_path / "list.json"
    bad.write_text("[1]")
    with pytest.raises(InvalidArgument, match="top level"):
        _Tree.load(bad)


def test_unknown_key_walks_sections() -> None:
    assert unknown_key(_Tree, ["server", "port"]) is None
    assert unknown_key(_Tree, ["server"]) is None
    assert unknown_key(_Tree, ["server", "port", "x"]) == "server.port.x"
    assert unknown_key(_Tree, ["nope", "x"]) == "nope"
