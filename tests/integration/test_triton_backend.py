"""TritonBackend against a real Triton Inference Server (nvidia-pytriton in .venv-triton).

Create the venv once with ``scripts/setup_triton.sh``; in CI (``CI`` set) a missing venv fails
the tests instead of skipping them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from cloud.backends import OnnxRuntimeBackend
from cloud.backends.triton import TritonBackend, TritonSettings, triton_model_ref
from cloud.core import ModelKey, ModelSpec, spec_from_onnx
from common.errors import InvalidArgument, NotFound, Unavailable
from scripts.triton import REPO_ROOT, TritonServer
from tests.support.tiny_models import tail_model


def _need_triton_venv() -> None:
    venv = Path(os.environ.get("AIML021_TRITON_VENV") or REPO_ROOT / ".venv-triton")
    if not (venv / "bin" / "python").exists():
        # `make test` creates it first; a missing Triton is a setup error, never a skip.
        pytest.fail(f"{venv} missing: run scripts/setup_triton.sh (make setup does)")


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> list[ModelSpec]:
    d = tmp_path_factory.mktemp("models")
    return [
        spec_from_onnx(tail_model(d / "v1.onnx", seed=1), name="tiny.cut1", version="1"),
        spec_from_onnx(tail_model(d / "v2.onnx", seed=2), name="tiny.cut1", version="2"),
        spec_from_onnx(tail_model(d / "rc.onnx", seed=3), name="tiny.cut1", version="2.1-rc"),
    ]


@pytest.fixture(scope="module")
def triton(specs: list[ModelSpec]) -> Iterator[TritonServer]:
    _need_triton_venv()
    with TritonServer(specs) as server:
        yield server


@pytest.fixture
async def backends(
    triton: TritonServer, specs: list[ModelSpec]
) -> AsyncIterator[tuple[TritonBackend, OnnxRuntimeBackend]]:
    tb = TritonBackend(TritonSettings(url=triton.grpc_target, infer_timeout_s=20))
    ob = OnnxRuntimeBackend()
    for s in specs:
        await tb.load(s)
        await ob.load(s)
    yield tb, ob
    await tb.close()
    await ob.close()


def test_version_mapping() -> None:
    assert triton_model_ref(ModelKey("fmnist.cut1", "3")) == ("fmnist.cut1__3", "1")
    assert triton_model_ref(ModelKey("fmnist.cut1", "3"), version_suffix=False) == (
        "fmnist.cut1",
        "3",
    )
    assert triton_model_ref(ModelKey("a b", "1.0.0"), version_suffix=False) == ("a_b__1.0.0", "1")


async def test_results_match_onnxruntime(
    backends: tuple[TritonBackend, OnnxRuntimeBackend], specs: list[ModelSpec]
) -> None:
    tb, ob = backends
    assert await tb.ready()
    rng = np.random.default_rng(0)
    for spec in specs:
        for n in (1, 7, 64):
            x = rng.standard_normal((n, 4, 3, 3)).astype(np.float32)
            got = await tb.infer(spec.key, {"features": x}, ["logits"])
            want = await ob.infer(spec.key, {"features": x}, ["logits"])
            assert got["logits"].shape == (n, 10)
            np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    # Versions are really different models.
    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    a = await tb.infer(specs[0].key, {"features": x}, [])
    b = await tb.infer(specs[1].key, {"features": x}, [])
    assert not np.allclose(a["logits"], b["logits"])


async def test_concurrent_single_requests_are_batched_correctly(
    backends: tuple[TritonBackend, OnnxRuntimeBackend], specs: list[ModelSpec]
) -> None:
    tb, ob = backends
    xs = [
        np.random.default_rng(i).standard_normal((1, 4, 3, 3)).astype(np.float32) for i in range(64)
    ]
    got = await asyncio.gather(*(tb.infer(specs[0].key, {"features": x}, ["logits"]) for x in xs))
    for x, g in zip(xs, got, strict=True):
        want = await ob.infer(specs[0].key, {"features": x}, ["logits"])
        np.testing.assert_allclose(g["logits"], want["logits"], rtol=1e-5, atol=1e-5)


async def test_errors(
    backends: tuple[TritonBackend, OnnxRuntimeBackend], specs: list[ModelSpec]
) -> None:
    tb, _ = backends
    missing = ModelSpec("nope", "1", specs[0].onnx_path, specs[0].inputs, specs[0].outputs)
    with pytest.raises(NotFound, match="does not serve"):
        await tb.load(missing)
    with pytest.raises(NotFound, match="not loaded"):
        await tb.infer(missing.key, {"features": np.zeros((1, 4, 3, 3), np.float32)}, [])
    with pytest.raises(InvalidArgument):
        await tb.infer(specs[0].key, {"features": np.zeros((1, 5, 3, 3), np.float32)}, [])
    with pytest.raises(InvalidArgument):
        await tb.infer(specs[0].key, {"features": np.zeros((1, 4, 3, 3), np.complex64)}, [])
    await tb.unload(specs[0].key)
    with pytest.raises(NotFound):
        await tb.infer(specs[0].key, {"features": np.zeros((1, 4, 3, 3), np.float32)}, [])


async def test_unreachable_triton_is_unavailable(specs: list[ModelSpec]) -> None:
    tb = TritonBackend(TritonSettings(url="127.0.0.1:1", control_timeout_s=1, infer_timeout_s=1))
    assert not await tb.ready()
    with pytest.raises(Unavailable):
        await tb.load(specs[0])
    await tb.close()


async def test_triton_dies_mid_run_then_recovers(specs: list[ModelSpec]) -> None:
    _need_triton_venv()
    server = TritonServer(specs[:1])
    server.start()
    tb = TritonBackend(
        TritonSettings(url=server.grpc_target, infer_timeout_s=15, control_timeout_s=2)
    )
    key = specs[0].key
    x = np.ones((8, 4, 3, 3), np.float32)
    try:
        await tb.load(specs[0])

        async def one() -> str:
            try:
                await tb.infer(key, {"features": x}, ["logits"])
                return "ok"
            except Unavailable:
                return "unavailable"

        tasks = [asyncio.create_task(one()) for _ in range(300)]
        await asyncio.sleep(0.05)
        server.kill()
        # No hung request: every one finishes, each ok or UNAVAILABLE (nothing else).
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
        assert set(outcomes) <= {"ok", "unavailable"}
        assert "unavailable" in outcomes
        assert not await tb.ready()
        assert await one() == "unavailable"

        server.start()  # same ports
        for _ in range(100):
            if await tb.ready():
                break
            await asyncio.sleep(0.1)
        assert await one() == "ok"
    finally:
        await tb.close()
        server.stop()
