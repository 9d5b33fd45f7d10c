"""Helpers shared by every test folder (unit, integration, e2e): synthetic bundles and models,
the real gateway run in-process for edge tests, fixtures. Test folders import from here, never
from each other; nothing here imports a test module (tests/unit/test_test_layout.py checks)."""
