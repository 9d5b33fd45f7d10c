"""Run tritonclient code in a child process and get its JSON result back.

tritonclient and our generated `inference` package cannot share a process (see tests/conftest.py),
so tests that drive a server with unchanged tritonclient write the client side as a small script.
The script receives its arguments as JSON in argv[1] and must print one JSON document last on
stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_script(script: Path, args: dict[str, Any], *, timeout: float = 120.0) -> Any:
    """Runs ``script`` with ``args`` and returns the JSON it printed last; raises on failure."""
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{script.name} failed with exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"{script.name} printed nothing:\n{proc.stderr}")
    return json.loads(lines[-1])
