"""The ``aiml021`` command offers only what the installed package can run."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from common.cli import SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[3]


def _installed_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_lives_in_the_wheel_and_registers_itself(command: str) -> None:
    module = SUBCOMMANDS[command]
    assert module.split(".")[0] in _installed_packages(), f"{command}: {module} is not installed"
    assert callable(getattr(importlib.import_module(module), "register", None))
