"""One request's fault ends that request only: outputs are checked before queueing, a backend that
breaks its spec fails only its batch, a crashed batch worker is restarted (the model reports not
ready meanwhile and health follows), and unloading is undone by loading (Triton's explicit model
control)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2

from cloud._health import ModelHealth
from cloud.batching import BatcherConfig, DynamicBatcher, DynamicBatching
from cloud.core import (
    Backend,
    DataPlane,
    InferenceRequest,
    ModelKey,
    ModelRepository,
    ModelSpec,
    TensorSpec,
)
from common.errors import Internal, InvalidArgument, NotFound

SPEC = ModelSpec(
    "m",
    "1",
    Path("m.onnx"),
    (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)), TensorSpec("z", "float32", (-1, 1))),
    8,
)


class _Backend(Backend):
    """Doubles x; ``drop`` names outputs it leaves out (a backend that breaks its spec)."""

    def __init__(self) -> None:
        self.drop: set[str] = set()
        self.loaded: list[ModelKey] = []

    async def load(self, model: ModelSpec) -> None:
        self.loaded.append(model.key)

    async def unload(self, key: ModelKey) -> None:
        self.loaded.remove(key)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        out = {"y": x * 2, "z": x.sum(axis=1, keepdims=True)}
        return {n: a for n, a in out.items() if n not in self.drop}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


def _request(outputs: tuple[str, ...] = (), v: float = 1.0) -> InferenceRequest:
    return InferenceRequest("m", "", {"x": np.full((1, 4), v, np.float32)}, outputs=outputs)


async def _plane() -> tuple[DataPlane, _Backend]:
    backend = _Backend()
    batchers = DynamicBatching(BatcherConfig(max_batch_size=8, restart_delay_s=0.05))
    dp = DataPlane(ModelRepository([SPEC]), backend, batchers)
    await dp.start()
    return dp, backend


async def test_an_unknown_output_is_invalid_argument_before_queueing_and_harms_nothing() -> None:
    dp, _ = await _plane()
    with pytest.raises(
        InvalidArgument, match=r"no output 'does_not_exist' \(outputs: \['y', 'z'\]\)"
    ):
        dp.submit(_request(("does_not_exist",)))
    with pytest.raises(InvalidArgument, match="'y' requested twice"):
        dp.submit(_request(("y", "y")))
    with pytest.raises(InvalidArgument, match=r"\(1000 characters\)"):
        dp.submit(_request(("q" * 1000,)))
    assert dp.batcher(SPEC.key).queued == 0
    r = await asyncio.wait_for(dp.infer(_request(("z",), 2.0)), 1)
    np.testing.assert_array_equal(r.outputs["z"], [[8.0]])
    assert dp.model_ready("m")
    await dp.close()


async def test_a_backend_that_omits_an_output_fails_only_the_requests_that_wanted_it() -> None:
    dp, backend = await _plane()
    backend.drop = {"z"}
    wants_z, wants_y = dp.submit(_request(("z",))), dp.submit(_request(("y",), 3.0))
    with pytest.raises(Internal, match=r"returned no output\(s\) \['z'\]"):
        await asyncio.wait_for(wants_z, 1)
    np.testing.assert_array_equal((await asyncio.wait_for(wants_y, 1)).outputs["y"], [[6.0] * 4])
    backend.drop = set()
    assert (await asyncio.wait_for(dp.infer(_request(("z",))), 1)).outputs["z"].shape == (1, 1)
    await dp.close()


async def test_a_crashed_worker_fails_its_batch_restarts_and_reports_not_ready_meanwhile() -> None:
    dp, _ = await _plane()
    batcher = dp.batcher(SPEC.key)
    assert isinstance(batcher, DynamicBatcher)
    real_take = batcher._take
    crashes = 0

    def take_then_crash() -> list[object]:
        nonlocal crashes
        taken = real_take()
        if crashes == 0:
            crashes += 1
            batcher._execute = _boom  # type: ignore[method-assign]
        return taken  # type: ignore[return-value]

    async def _boom(batch: object) -> None:
        del batcher._execute  # the next worker runs the real method
        raise RuntimeError("a bug in the worker")

    batcher._take = take_then_crash  # type: ignore[method-assign]
    victim = dp.submit(_request())
    with pytest.raises(Internal, match="batch worker failed"):
        await asyncio.wait_for(victim, 1)
    assert not dp.model_ready("m") and dp.models_down() == [SPEC.key]
    served = await asyncio.wait_for(dp.infer(_request(v=5.0)), 1)  # queued while down, answered
    np.testing.assert_array_equal(served.outputs["y"], [[10.0] * 4])
    assert dp.model_ready("m") and dp.models_down() == [] and batcher.restarts == 1
    await dp.close()


async def test_health_is_not_serving_while_a_model_is_down() -> None:
    servicer = health.aio.HealthServicer()
    down: list[ModelKey] = []
    watch = ModelHealth(servicer, lambda: down, ("", "inference.GRPCInferenceService"))

    async def status(name: str) -> int:
        req = health_pb2.HealthCheckRequest(service=name)
        return (await servicer.Check(req, None)).status  # type: ignore[arg-type]

    for name in ("", "inference.GRPCInferenceService"):
        await servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    assert await watch.check()
    down.append(SPEC.key)
    assert not await watch.check()
    assert await status("") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert (
        await status("inference.GRPCInferenceService") == health_pb2.HealthCheckResponse.NOT_SERVING
    )
    down.clear()
    assert await watch.check()
    assert await status("") == health_pb2.HealthCheckResponse.SERVING


async def test_unload_then_load_serves_the_model_again() -> None:
    dp, backend = await _plane()
    await dp.unload(SPEC.key)
    assert not dp.model_ready("m") and backend.loaded == []
    assert [s.key for s in dp.unloaded()] == [SPEC.key]
    with pytest.raises(NotFound):
        dp.submit(_request())
    assert [s.key for s in await dp.reload("m")] == [SPEC.key]
    assert dp.model_ready("m") and dp.unloaded() == [] and backend.loaded == [SPEC.key]
    r = await asyncio.wait_for(dp.infer(_request(v=4.0)), 1)
    np.testing.assert_array_equal(r.outputs["y"], [[8.0] * 4])
    assert await dp.reload("m") == []  # loading a served model leaves it as it is
    with pytest.raises(NotFound):
        await dp.reload("never-served")
    await dp.close()


async def test_the_heap_trimmer_runs_off_the_loop_and_stops() -> None:
    from cloud._memory import HeapTrimmer, trim_heap

    assert isinstance(trim_heap(), bool)
    trimmer = HeapTrimmer(0.01)
    trimmer.start()
    await asyncio.sleep(0.05)
    await trimmer.close()
    await trimmer.close()  # idempotent
