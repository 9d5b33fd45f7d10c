"""Machine description stored with every policy benchmark result."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def machine_info() -> dict[str, Any]:
    versions = {}
    for pkg in ("numpy", "grpcio", "protobuf", "onnxruntime"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
    }
