"""Cloud gateway: the grpc-free core (cloud.core), its implementations (backends, batching,
stores), the front doors (cloud.grpc, cloud.rest) and the composition root that wires them
(:class:`cloud.app.Gateway`, importable as ``cloud.Gateway``)."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy: importing cloud.core (or any other part) must not build the whole gateway graph.
    if name == "Gateway":
        from cloud.app import Gateway

        return Gateway
    raise AttributeError(f"module 'cloud' has no attribute {name!r}")


__all__ = ["Gateway"]
