"""Canary share, shadow comparisons that never change answers, automatic rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cloud.backends import OnnxRuntimeBackend
from cloud.batching import DynamicBatching
from cloud.core import (
    DataPlane,
    InferenceRequest,
    InferenceResult,
    ModelRepository,
    RollbackPolicy,
    Rollout,
    RolloutManager,
    RolloutMode,
    RolloutRouter,
    RolloutState,
    hash_fraction,
    spec_from_onnx,
)
from common.errors import InvalidArgument, NotFound, Unavailable
from tests.support.tiny_models import tail_model


class FakePlane:
    """Answers with one-hot logits naming the version; a version in ``failing`` raises."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.failing = failing
        self.calls: list[str] = []

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        self.calls.append(request.model_version)
        if request.model_version in self.failing:
            raise Unavailable(f"version {request.model_version} is broken")
        logits = np.zeros((1, 10), np.float32)
        logits[0, int(request.model_version)] = 1.0
        return InferenceResult(request.model_name, request.model_version, {"logits": logits})


def _has(name: str, version: str) -> bool:
    return name == "m" and version in {"1", "2", "3"}


def _req(i: int, version: str = "") -> InferenceRequest:
    return InferenceRequest(
        "m", version, {"x": np.zeros((1, 1), np.float32)}, request_id=f"req-{i}"
    )


async def test_canary_share_of_5000_requests() -> None:
    mgr = RolloutManager(_has)
    mgr.set(Rollout("m", "1", "2", RolloutMode.CANARY, 0.10))
    router = RolloutRouter(FakePlane(), mgr)
    versions = [(await router.infer(_req(i))).model_version for i in range(5000)]
    share = versions.count("2") / 5000
    assert 0.08 <= share <= 0.12
    # Sticky: the same routing key always lands on the same version.
    assert {(await router.infer(_req(7))).model_version for _ in range(5)} == {versions[7]}
    # An explicit version bypasses the rollout.
    assert (await router.infer(_req(1, version="3"))).model_version == "3"
    _, stats = mgr.get("m")
    assert stats.candidate_requests == versions.count("2") + (5 if versions[7] == "2" else 0)


def test_hash_fraction_is_uniform_enough() -> None:
    u = np.array([hash_fraction("m", f"k{i}") for i in range(20000)])
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.02


async def test_rollback_when_candidate_fails() -> None:
    mgr = RolloutManager(_has)
    mgr.set(
        Rollout(
            "m",
            "1",
            "2",
            RolloutMode.CANARY,
            0.5,
            RollbackPolicy(max_error_rate=0.2, min_requests=10),
        )
    )
    plane = FakePlane(failing=frozenset({"2"}))
    router = RolloutRouter(plane, mgr)
    failures = 0
    for i in range(200):
        try:
            await router.infer(_req(i))
        except Unavailable:
            failures += 1
    rollout, stats = mgr.get("m")
    assert rollout.state is RolloutState.ROLLED_BACK
    assert failures == stats.candidate_errors == 10  # rolled back exactly at the bound
    assert plane.calls[-50:] == ["1"] * 50  # all later traffic on stable


async def test_shadow_never_changes_answers_and_is_measured() -> None:
    mgr = RolloutManager(_has)
    mgr.set(Rollout("m", "1", "2", RolloutMode.SHADOW, 1.0, RollbackPolicy(0.5, 1000)))
    plane = FakePlane()
    router = RolloutRouter(plane, mgr)
    for i in range(100):
        assert (await router.infer(_req(i))).model_version == "1"
    await router.drain()
    _, stats = mgr.get("m")
    assert stats.shadow_comparisons == 100
    assert stats.shadow_agreement == 0.0  # the fake versions always disagree
    assert plane.calls.count("2") == 100
    # A failing shadow is counted, not surfaced, and can roll the shadow back.
    mgr.set(Rollout("m", "1", "2", RolloutMode.SHADOW, 1.0, RollbackPolicy(0.1, 5)))
    router = RolloutRouter(FakePlane(failing=frozenset({"2"})), mgr)
    for i in range(20):
        assert (await router.infer(_req(i))).model_version == "1"
        await router.drain()
    rollout, stats = mgr.get("m")
    assert rollout.state is RolloutState.ROLLED_BACK and stats.candidate_errors == 5
    await router.close()


def test_set_validation_and_promotion() -> None:
    mgr = RolloutManager(_has)
    with pytest.raises(NotFound):
        mgr.get("m")
    with pytest.raises(InvalidArgument, match="traffic_fraction"):
        mgr.set(Rollout("m", "1", "2", RolloutMode.CANARY, 1.5))
    with pytest.raises(InvalidArgument, match="candidate_version"):
        mgr.set(Rollout("m", "1", "", RolloutMode.CANARY, 0.1))
    with pytest.raises(NotFound, match="no served version '9'"):
        mgr.set(Rollout("m", "1", "9", RolloutMode.CANARY, 0.1))
    with pytest.raises(InvalidArgument, match="differ"):
        mgr.set(Rollout("m", "1", "1", RolloutMode.SHADOW, 0.1))
    with pytest.raises(InvalidArgument, match="ROLLED_BACK"):
        mgr.set(Rollout("m", "1", "2", RolloutMode.CANARY, 0.1, state=RolloutState.ROLLED_BACK))
    promoted = mgr.set(Rollout("m", "1", "2", RolloutMode.CANARY, 0.1, state=RolloutState.PROMOTED))
    assert promoted.stable_version == "2" and promoted.mode is RolloutMode.NONE
    assert mgr.choose("m", "x") is not None and mgr.choose("m", "x").version == "2"  # type: ignore[union-attr]
    assert mgr.choose("other") is None


async def test_shadow_on_a_real_data_plane(tmp_path: Path) -> None:
    specs = [
        spec_from_onnx(tail_model(tmp_path / "a.onnx", seed=1), name="tiny", version="1"),
        spec_from_onnx(
            tail_model(tmp_path / "b.onnx", seed=1), name="tiny", version="2"
        ),  # same weights
    ]
    plane = DataPlane(ModelRepository(specs), OnnxRuntimeBackend(), DynamicBatching())
    await plane.start()
    mgr = RolloutManager(lambda n, v: plane.model_ready(n, v))
    mgr.set(Rollout("tiny", "1", "2", RolloutMode.SHADOW, 0.5))
    router = RolloutRouter(plane, mgr)
    xs = [
        np.random.default_rng(i).standard_normal((1, 4, 3, 3)).astype(np.float32) for i in range(40)
    ]
    reqs = [
        InferenceRequest("tiny", "", {"features": x}, request_id=f"r{i}") for i, x in enumerate(xs)
    ]
    got = await asyncio.gather(*(router.infer(r) for r in reqs))
    want = [await plane.infer(InferenceRequest("tiny", "1", {"features": x})) for x in xs]
    for g, w in zip(got, want, strict=True):
        assert g.model_version == "1"
        np.testing.assert_array_equal(g.outputs["logits"], w.outputs["logits"])
    await router.drain()
    _, stats = mgr.get("tiny")
    assert 0 < stats.shadow_comparisons < 40 and stats.shadow_agreement == 1.0
    await router.close()
    await plane.close()
