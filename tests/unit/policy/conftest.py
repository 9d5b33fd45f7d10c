from __future__ import annotations

import pytest

from policy import BundleProfile, Trace, synthetic_profile, synthetic_trace


@pytest.fixture(scope="session")
def profile() -> BundleProfile:
    return synthetic_profile()


@pytest.fixture(scope="session")
def trace() -> Trace:
    return synthetic_trace(2000, seed=0)
