"""Suite-wide test configuration.

tritonclient ships its own generated code for protobuf package `inference`, and so do we
(generated/python/inference, the gateway's Triton-compatible service). Protobuf's global
descriptor pool refuses the second registration ("duplicate symbol 'inference.DataType'"), so the
two can never share a process. The whole suite runs in one pytest process that imports the
gateway, so tritonclient is used only in child processes: see tests/tritonclient_subprocess.py.
This hook turns an accidental in-process import into an immediate, explanatory failure instead of
a collection error that depends on test order.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _RefuseTritonclient(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "tritonclient.grpc" or fullname.startswith("tritonclient.grpc."):
            raise ImportError(
                "tritonclient.grpc cannot be imported in the pytest process: it registers protobuf "
                "package 'inference' like our generated code does. Run tritonclient in a child "
                "process with tests.tritonclient_subprocess.run_script()."
            )
        return None


sys.meta_path.insert(0, _RefuseTritonclient())
