"""Fixtures of the observability integration tests."""

from tests.support.gateway import gateway_models_dir

__all__ = ["gateway_models_dir"]  # fixtures
