"""Models scoped by org / project / region (``authz.models``) without a server: the repository
shows each principal only its models — every lookup (inference, registry, rollouts, repository
control) answers another tenant's model exactly as an unknown one — and reports each refusal
for the audit trail; unlisted models stay everyone's, the gateway and ``--insecure`` see all."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    INTERNAL,
    DataPlane,
    InferenceRequest,
    ModelRepository,
    ModelSpec,
    Principal,
    RegistryView,
    Role,
    Rollout,
    RolloutManager,
    RolloutMode,
    RolloutRouter,
    TensorSpec,
    acting_as,
)
from common.errors import NotFound
from tests.unit.cloud._session_plane import SPEC, GatedDouble

ACME_OP = Principal("op-a", Role.OPERATOR, "acme")
ACME_LAB = Principal("svc-lab", Role.SERVICE, "acme", project="lab")
GLOBEX_ADMIN = Principal("admin-b", Role.ADMIN, "globex")
GLOBEX_DEV = Principal("dev-b", Role.DEVICE, "globex", device_id="dev-b")
INSECURE = Principal("insecure", Role.ADMIN, "default", authenticated_by="insecure")

_T = (TensorSpec("x", "float32", (-1, 4)),)


def _spec(name: str, version: str = "1", bundle: str = "", cut: str = "") -> ModelSpec:
    return ModelSpec(name, version, Path(f"{name}.onnx"), _T, _T, 8, bundle=bundle, cut_point=cut)


def _repo() -> ModelRepository:
    """acme's ``a`` (a bundle with a tail), acme/lab's ``lab``, globex's ``b``, everyone's
    ``shared`` and ``open`` (not listed)."""
    return ModelRepository(
        [
            _spec("a", bundle="a"),
            _spec("a", "2", bundle="a"),
            _spec("a.cut1", bundle="a", cut="cut1"),
            _spec("lab"),
            _spec("b"),
            _spec("shared"),
            _spec("open"),
        ],
        scopes={
            "a": frozenset({"acme"}),
            "lab": frozenset({"acme/lab"}),
            "b": frozenset({"globex"}),
            "shared": frozenset({"*"}),
        },
    )


def _refusals(
    p: Principal,
) -> tuple[list[tuple[str, str]], contextlib.AbstractContextManager[Principal]]:
    """What the core reports as refused while acting as ``p`` (a front door's hook)."""
    heard: list[tuple[str, str]] = []
    return heard, acting_as(p, lambda resource, detail: heard.append((resource, detail)))


def test_each_principal_lists_only_its_models() -> None:
    repo = _repo()
    with acting_as(ACME_OP):
        assert repo.names() == ["a", "a.cut1", "lab", "open", "shared"]  # org-wide: the org's
    with acting_as(Principal("svc-shop", Role.SERVICE, "acme", project="shop")):
        assert repo.names() == ["a", "a.cut1", "open", "shared"]  # not another project's
    with acting_as(GLOBEX_DEV):
        assert repo.names() == ["b", "open", "shared"]
        assert {s.name for s in repo.specs()} == {"b", "open", "shared"}
    for unrestricted in (INTERNAL, INSECURE):
        with acting_as(unrestricted):
            assert len(repo.names()) == 6 and len(repo.specs()) == 7


def test_another_tenant_s_model_is_answered_as_an_unknown_one_and_reported() -> None:
    repo = _repo()
    heard, ctx = _refusals(GLOBEX_DEV)
    with ctx:
        with pytest.raises(NotFound) as hidden:
            repo.resolve("a")
        with pytest.raises(NotFound) as unknown:
            repo.resolve("zzz")
        for lookup in (
            lambda: repo.versions("a"),
            lambda: repo.resolve("a", "2"),
            lambda: repo.resolve_cut("a", "1", "cut1"),  # a tail is its bundle's
            lambda: repo.resolve("a.cut1"),
        ):
            with pytest.raises(NotFound, match="served models: b, open, shared"):
                lookup()
    assert str(hidden.value).replace("'a'", "'zzz'") == str(unknown.value)
    assert "a'" not in str(hidden.value).split("served models")[1]
    assert [r for r, _ in heard] == ["a", "a", "a", "a", "a.cut1"]
    assert "outside the caller's scope (org 'globex'" in heard[0][1]
    # An unknown name is no refusal, and acme's own lookups report nothing.
    acme_heard, acme_ctx = _refusals(ACME_OP)
    with acme_ctx:
        assert repo.resolve_cut("a", "1", "cut1").name == "a.cut1"
        assert repo.versions("a") == ["1", "2"]
    assert acme_heard == []


async def test_inference_unload_and_reload_see_the_same_models() -> None:
    backend = GatedDouble()
    dp = DataPlane(
        ModelRepository([SPEC]), backend, DynamicBatching(BatcherConfig(max_batch_size=8))
    )
    await dp.start()
    dp.model_orgs = {"m": frozenset({"acme"})}
    request = InferenceRequest("m", "", {"x": np.ones((1, 4), np.float32)})
    heard, ctx = _refusals(GLOBEX_DEV)
    with ctx, pytest.raises(NotFound, match="unknown model 'm'"):
        dp.submit(dataclasses.replace(request), SPEC)  # even with the spec handed in
    assert [r for r, _ in heard] == ["m"]
    with acting_as(ACME_OP):
        assert float((await dp.infer(dataclasses.replace(request))).outputs["y"][0, 0]) == 2.0
        await dp.unload(SPEC.key)
        assert [s.name for s in dp.unloaded()] == ["m"]
    with acting_as(GLOBEX_ADMIN):
        assert dp.unloaded() == []  # the repository index does not list it either
        with pytest.raises(NotFound, match="unknown model 'm'"):
            await dp.reload("m")
    assert not dp.model_ready("m")
    with acting_as(ACME_OP):
        assert [s.key for s in await dp.reload("m")] == [SPEC.key]
    await dp.close()


def test_the_registry_lists_and_gets_only_visible_models() -> None:
    repo = _repo()
    view = RegistryView(repo)
    with acting_as(GLOBEX_DEV):
        models, token = view.list()
        assert [m.name for m in models] == ["b", "open", "shared"] and token == ""
        with pytest.raises(NotFound):
            view.get("a")
    with acting_as(ACME_LAB):
        first, token = view.list(page_size=2)
        rest, _ = view.list(page_size=10, page_token=token)
        assert [m.name for m in first + rest] == ["a", "a.cut1", "lab", "open", "shared"]


def test_rollouts_are_as_visible_as_their_model() -> None:
    repo = _repo()

    def has_version(name: str, version: str) -> bool:
        try:
            repo.resolve(name, version)
        except NotFound:
            return False
        return True

    mgr = RolloutManager(has_version, visible=repo.visible)
    canary = Rollout("a", "1", "2", RolloutMode.CANARY, 1.0)
    with acting_as(ACME_OP):
        mgr.set(canary)
        assert mgr.get("a")[0].candidate_version == "2"
        assert mgr.choose("a", "k") is not None
    heard, ctx = _refusals(GLOBEX_ADMIN)
    with ctx:
        with pytest.raises(NotFound) as hidden:
            mgr.get("a")
        with pytest.raises(NotFound) as unknown:
            mgr.get("zzz")
        assert str(hidden.value).replace("'a'", "'zzz'") == str(unknown.value)
        with pytest.raises(NotFound, match="has no served version"):
            mgr.set(Rollout("a", "1", mode=RolloutMode.NONE))
        assert mgr.choose("a", "k") is None  # never routed to acme's candidate
    assert {r for r, _ in heard} == {"a"}
    with acting_as(ACME_OP):
        assert mgr.get("a")[0] == mgr.rollouts()[0]  # unchanged
        assert mgr.get("a")[0].mode is RolloutMode.CANARY


async def test_another_tenant_s_requests_never_count_towards_a_rollback() -> None:
    repo = _repo()
    mgr = RolloutManager(lambda n, v: True, visible=repo.visible)
    with acting_as(ACME_OP):
        mgr.set(Rollout("a", "1", "2", RolloutMode.CANARY, 1.0))

    class Refusing:
        repository = repo

        def submit_direct(self, request: InferenceRequest, spec: object) -> object:
            repo.resolve(request.model_name, request.model_version)
            raise AssertionError("acme's model served to globex")

    router = RolloutRouter(Refusing(), mgr)  # type: ignore[arg-type]
    with acting_as(GLOBEX_DEV):
        for i in range(50):
            request = InferenceRequest("a", "", {}, request_id=f"r{i}")
            assert router.submit(request) is None  # not routed: the data plane says NOT_FOUND
    with acting_as(ACME_OP):
        rollout, stats = mgr.get("a")
    assert stats.candidate_requests == 0 and rollout.mode is RolloutMode.CANARY
