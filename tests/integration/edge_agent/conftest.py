from __future__ import annotations

from tests.support.aio import _collect_grpc_objects
from tests.support.gateway import gateway_models_dir

__all__ = ["_collect_grpc_objects", "gateway_models_dir"]  # fixtures
