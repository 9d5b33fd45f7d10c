"""Suite-wide test configuration.

tritonclient ships its own generated code for protobuf package `inference`, and so do we
(generated/python/inference, the gateway's Triton-compatible service). Protobuf's global
descriptor pool refuses the second registration ("duplicate symbol 'inference.DataType'"), so the
two can never share a process. The whole suite runs in one pytest process that imports the
gateway, so tritonclient is used only in child processes: see tests/support/tritonclient.py.
This hook turns an accidental in-process import into an immediate, explanatory failure instead of
a collection error that depends on test order.

Every test is marked by the folder it lives in (``unit``, ``integration``, ``e2e`` or
``adversarial``, declared in pyproject.toml), so ``pytest -m unit`` runs the fast tests alone.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

from common.auth import require_tls13

# grpc reads its TLS settings once, when first imported: TLS 1.2 off before any test imports it
# (common.auth._tls explains the mechanism; the gateway refuses to start without it).
if not require_tls13():
    raise RuntimeError("grpc was imported before tests/conftest.py could switch TLS 1.2 off")

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = ("unit", "integration", "e2e", "adversarial")
"""Test folders, each also the name of the marker its tests carry."""


class _RefuseTritonclient(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "tritonclient.grpc" or fullname.startswith("tritonclient.grpc."):
            raise ImportError(
                "tritonclient.grpc cannot be imported in the pytest process: it registers protobuf "
                "package 'inference' like our generated code does. Run tritonclient in a child "
                "process with tests.support.tritonclient.run_script()."
            )
        return None


sys.meta_path.insert(0, _RefuseTritonclient())


def pytest_sessionstart(session: pytest.Session) -> None:
    # pytest-asyncio 1.2 asks asyncio.get_event_loop() for "the loop to restore" before its first
    # runner; in a main thread that never set a loop, that call creates one which nobody closes,
    # and its self-pipe later surfaces as an unraisable ResourceWarning in whichever test runs when
    # it is collected (seen as random failures of test_rotation_drill / test_console_api). Marking
    # the thread as having no loop makes that call raise instead, which pytest-asyncio expects.
    asyncio.set_event_loop(None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder (tests/unit/... -> ``unit``)."""
    for item in items:
        try:
            folder = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue  # collected from outside tests/ (e.g. a path given on the command line)
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


class _FailuresAsTheyHappen:
    """Prints a failure's traceback when it happens, not only in the summary at the end: a later
    crash of the process (CI once saw a segmentation fault in the test after a failure) would
    otherwise take the failure's cause with it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if not report.failed or terminal is None:
            return
        terminal.write_line("")
        terminal.write_line(f"FAILED {report.nodeid} ({report.when}), as it happened:", red=True)
        for line in report.longreprtext.splitlines()[-60:]:
            terminal.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_FailuresAsTheyHappen(config), "failures-as-they-happen")
