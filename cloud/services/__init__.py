"""Registry, deploy (rollouts) and cache services: core views plus thin gRPC servicers."""

from ._converters import (
    cache_entry_from_pb,
    cache_entry_to_pb,
    model_to_pb,
    rollout_from_pb,
    rollout_to_pb,
    stats_to_pb,
)
from ._registry import CutPointInfo, ExitInfo, ModelInfo, RegistryView, VersionInfo
from ._servicers import CacheServicer, DeployServicer, RegistryServicer, add_services

__all__ = [
    "CacheServicer",
    "CutPointInfo",
    "DeployServicer",
    "ExitInfo",
    "ModelInfo",
    "RegistryServicer",
    "RegistryView",
    "VersionInfo",
    "add_services",
    "cache_entry_from_pb",
    "cache_entry_to_pb",
    "model_to_pb",
    "rollout_from_pb",
    "rollout_to_pb",
    "stats_to_pb",
]
