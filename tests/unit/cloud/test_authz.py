"""Authorization pieces without a server: the table and its docs page, principals from
certificates and tokens, and tenant isolation in the data plane (idempotency keys per principal,
payload digests, cache entries per org, models per org)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from cloud.authz import GRPC_RULES, REST_RULES, Authenticator, _authn, markdown_table
from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    INTERNAL,
    ByteBudget,
    CacheEntry,
    DataPlane,
    InferenceRequest,
    ModelRepository,
    OrgScopedCache,
    Principal,
    Role,
    SessionCore,
    SessionLimits,
    acting_as,
    check_payload_digest,
    current_principal,
)
from cloud.core._costs import OrgDirectory
from cloud.stores import MemoryIdempotencyStore, MemoryResultCache
from common.auth import JwksVerifier, generate_signing_key, issue_token, public_jwk
from common.errors import (
    ErrorCode,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from tests.support.authz import AuthzWorld
from tests.unit.cloud._session_plane import ROW, SPEC, GatedDouble, RecordingSink, header

ROOT = Path(__file__).resolve().parents[3]
DEV_A = Principal("dev-a", Role.DEVICE, "acme", device_id="dev-a")
DEV_B = Principal("dev-b", Role.DEVICE, "globex", device_id="dev-b")
DEV_A2 = Principal("dev-a2", Role.DEVICE, "acme", device_id="dev-a2")


def test_docs_authz_md_lists_the_table() -> None:
    doc = (ROOT / "docs" / "authz.md").read_text()
    embedded = doc.split("<!-- authz-table:")[1].split("-->", 1)[1].split("<!-- /authz-table")[0]
    assert embedded.strip() == markdown_table().strip(), (
        "docs/authz.md is stale: paste cloud.authz.markdown_table()"
    )


def test_the_table_says_what_the_issue_requires() -> None:
    kserve = "/inference.GRPCInferenceService/"
    device_may_not = [
        "/aiml021.cache.v1.CacheService/Put",
        kserve + "RepositoryModelUnload",
        kserve + "RepositoryModelLoad",
        "/aiml021.deploy.v1.DeployService/SetRollout",
        "/aiml021.policy.v1.PolicyService/ReportOutcome",
    ]
    for method in device_may_not:
        assert Role.DEVICE not in GRPC_RULES[method].roles, method
        assert GRPC_RULES[method].audit, method
    for method in (kserve + "RepositoryModelUnload", kserve + "RepositoryModelLoad"):
        assert GRPC_RULES[method].roles == {Role.ADMIN}
    assert Role.OPERATOR in GRPC_RULES["/aiml021.deploy.v1.DeployService/SetRollout"].roles
    assert GRPC_RULES["/aiml021.session.v1.SessionService/Connect"].roles == {Role.DEVICE}
    assert Role.DEVICE in GRPC_RULES["/aiml021.cache.v1.CacheService/Get"].roles
    # Observers only read: every method or route they may call is a read.
    writes = ("Put", "Set", "Load", "Unload", "Report", "Infer", "Connect", "Decide")
    for method, rule in GRPC_RULES.items():
        if Role.OBSERVER in rule.roles:
            assert not any(method.rsplit("/", 1)[1].startswith(w) for w in writes), method
    for (verb, route), rule in REST_RULES.items():
        if Role.OBSERVER in rule.roles and not rule.public:
            assert verb == "GET" or route.endswith("/index"), route


def test_principals_from_device_certificates(tmp_path: Path) -> None:
    world = AuthzWorld(tmp_path)
    authn = Authenticator(default_org="fallback")
    dev = world.device("cam-1", "acme")
    p = authn.principal(dev.cert_der(), None)
    assert (p.subject, p.role, p.org, p.device_id, p.authenticated_by) == (
        "cam-1",
        Role.DEVICE,
        "acme",
        "cam-1",
        "mtls",
    )
    with pytest.raises(Unauthenticated, match="no identity"):
        authn.principal(world.anonymous().cert_der(), None)
    with pytest.raises(Unauthenticated, match="no identity"):
        authn.principal(None, None)
    with pytest.raises(Unauthenticated, match="accepts no tokens"):
        authn.principal(dev.cert_der(), "Bearer abc")
    with pytest.raises(Unauthenticated, match="Bearer"):
        Authenticator(JwksVerifier(world.jwks_file)).principal(dev.cert_der(), "Basic abc")
    insecure = Authenticator(insecure=True).principal(None, None)
    assert insecure.authenticated_by == "insecure"


def test_a_device_is_billed_to_the_org_its_certificate_names(tmp_path: Path) -> None:
    """One device → org source: costs and budgets use the org the certificate names (the one
    the device's data is kept under); the accounting map only places devices without one."""
    from tests.support.authz import _client_cert

    world = AuthzWorld(tmp_path)
    authn = Authenticator(default_org="fallback")
    assert authn.org_of_device("cam-1") == ""  # not seen yet
    authn.principal(world.device("cam-1", "acme").cert_der(), None)
    unscoped, _ = _client_cert(world._ca.cert, world._ca.key, "cam-2", ["aiml021:device:cam-2"])
    authn.principal_from_pem(unscoped, None)  # names no org: the default org
    assert authn.org_of_device("cam-1") == "acme" and authn.org_of_device("cam-2") == "fallback"
    directory = OrgDirectory(
        devices={"cam-1": "globex", "dev-plain": "globex"},
        orgs=frozenset({"acme", "globex", "fallback"}),
        resolver=authn.org_of_device,
    )
    assert directory.org_of("cam-1") == "acme"  # the certificate wins over the map
    assert directory.org_of("cam-2") == "fallback"
    assert directory.org_of("dev-plain") == "globex"  # no certificate seen: the map
    assert directory.org_of("nobody") == "default"


def test_remembered_device_orgs_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_authn, "MAX_REMEMBERED_DEVICES", 2)
    world = AuthzWorld(tmp_path)
    authn = Authenticator()
    for d in ("a", "b", "c"):
        authn.principal(world.device(d, "acme").cert_der(), None)
    assert [authn.org_of_device(d) for d in ("a", "b", "c")] == ["", "acme", "acme"]


def test_contradictory_certificates_are_refused(tmp_path: Path) -> None:
    from tests.support.authz import _client_cert

    world = AuthzWorld(tmp_path)
    authn = Authenticator()
    cases = {
        "disagree": ("cn-x", ["aiml021:device:other"]),
        "repeated": ("d", ["aiml021:device:d", "aiml021:org:a", "aiml021:org:b"]),
        "empty": ("d", ["aiml021:device:d", "aiml021:org:"]),
    }
    for why, (cn, uris) in cases.items():
        pem, _ = _client_cert(world._ca.cert, world._ca.key, cn, uris)
        with pytest.raises(Unauthenticated):
            authn.principal_from_pem(pem, None)
        assert why


def test_principals_from_tokens(tmp_path: Path) -> None:
    world = AuthzWorld(tmp_path)
    authn = Authenticator(JwksVerifier(world.jwks_file))
    svc = world.client("svc-1", "Service", "acme", project="p1")
    p = authn.principal(svc.cert_der(), svc.headers()["authorization"])
    assert (p.subject, p.role, p.org, p.project, p.authenticated_by) == (
        "svc-1",
        Role.SERVICE,
        "acme",
        "p1",
        "mtls+token",
    )
    dev = world.device("cam-1", "acme")
    bound = issue_token(world.signing_key, "cam-1", "Device", "acme", cert_der=dev.cert_der())
    assert authn.principal(dev.cert_der(), f"Bearer {bound}").device_id == "cam-1"
    # The device token of another device, or of another org, over this certificate: refused.
    other = world.device("cam-2", "acme")
    stolen = issue_token(world.signing_key, "cam-2", "Device", "acme", cert_der=other.cert_der())
    with pytest.raises(Unauthenticated, match="another client certificate"):
        authn.principal(dev.cert_der(), f"Bearer {stolen}")
    liar = issue_token(world.signing_key, "cam-1", "Device", "globex", cert_der=dev.cert_der())
    with pytest.raises(Unauthenticated, match="org"):
        authn.principal(dev.cert_der(), f"Bearer {liar}")
    forged = issue_token(generate_signing_key(), "svc-1", "Admin", "acme")
    with pytest.raises(Unauthenticated, match="signature"):
        authn.principal(svc.cert_der(), f"Bearer {forged}")
    assert public_jwk(world.signing_key)["kid"] == world.signing_key["kid"]


# -- tenant isolation in the data plane ------------------------------------------------------


async def _plane(**kw: object) -> tuple[DataPlane, GatedDouble]:
    backend = GatedDouble()
    dp = DataPlane(
        ModelRepository([SPEC]),
        backend,
        DynamicBatching(BatcherConfig(max_batch_size=8)),
        **kw,  # type: ignore[arg-type]
    )
    await dp.start()
    return dp, backend


def _req(value: float, key: str = "", digest: bytes = b"") -> InferenceRequest:
    return InferenceRequest(
        "m",
        "",
        {"x": np.full((1, 4), value, np.float32)},
        idempotency_key=key,
        payload_digest=digest,
    )


async def _as(p: Principal, request: InferenceRequest, dp: DataPlane) -> float:
    with acting_as(p):
        result = await dp.infer(request)
    return float(result.outputs["y"][0, 0])


async def test_idempotency_keys_belong_to_their_principal() -> None:
    dp, backend = await _plane(idempotency=MemoryIdempotencyStore())
    # Key squatting: dev-b sends dev-a's key first, with its own input.
    assert await _as(DEV_B, _req(5.0, "K"), dp) == 10.0
    # dev-a's request under that key is computed for dev-a, not refused, not dev-b's answer.
    assert await _as(DEV_A, _req(1.0, "K"), dp) == 2.0
    # Result theft: dev-b reusing dev-a's key gets its own stored answer, never dev-a's; a
    # device of dev-a's org is another principal too.
    assert await _as(DEV_B, _req(5.0, "K"), dp) == 10.0
    assert await _as(DEV_A2, _req(7.0, "K"), dp) == 14.0
    assert backend.calls == 3
    # A replay by the owner is answered from the store.
    assert await _as(DEV_A, _req(1.0, "K"), dp) == 2.0
    assert backend.calls == 3
    # The same key with another payload is a precise error for its owner.
    with pytest.raises(FailedPrecondition, match="different payload"):
        await _as(DEV_A, _req(9.0, "K"), dp)
    with pytest.raises(InvalidArgument, match=r"1\.\.256"):
        await _as(DEV_A, _req(1.0, "k" * 257), dp)
    await dp.close()


async def test_inflight_duplicates_are_joined_only_within_a_principal() -> None:
    dp, backend = await _plane(idempotency=MemoryIdempotencyStore())
    backend.hold()
    with acting_as(DEV_A):
        first = dp.submit(_req(1.0, "K"))
    with acting_as(DEV_B):
        other = dp.submit(_req(3.0, "K"))  # same key, other principal: its own computation
    await asyncio.sleep(0.05)
    backend.release()
    assert float((await first).outputs["y"][0, 0]) == 2.0
    assert float((await other).outputs["y"][0, 0]) == 6.0
    await dp.close()


async def test_records_name_the_real_caller() -> None:
    records: list = []
    dp, _ = await _plane(metadata_sink=records.append)
    request = _req(1.0)
    with acting_as(DEV_A):
        await dp.infer(request)
    dp.record(request, "OK")
    assert records[0].device_id == "dev-a"
    await dp.close()


async def test_models_are_served_to_their_orgs_only() -> None:
    dp, _ = await _plane()
    dp.model_orgs = {"m": frozenset({"acme"})}
    assert await _as(DEV_A, _req(1.0), dp) == 2.0
    # Another org's model does not exist for globex: the words of an unknown model.
    with pytest.raises(NotFound, match=r"unknown model 'm' \(served models: none\)"):
        await _as(DEV_B, _req(1.0), dp)
    dp.model_orgs = {"m": frozenset({"*"})}
    assert await _as(DEV_B, _req(1.0), dp) == 2.0
    await dp.close()


def test_model_scopes_by_org_project_and_region() -> None:
    scopes = {"m": frozenset({"acme/lab", "globex/ops/eu"})}
    lab = Principal("a", Role.SERVICE, "acme", project="lab")
    other = Principal("b", Role.SERVICE, "acme", project="shop")
    org_wide = Principal("c", Role.OPERATOR, "acme")
    eu = Principal("d", Role.DEVICE, "globex", project="ops", region="eu")
    us = Principal("e", Role.DEVICE, "globex", project="ops", region="us")
    assert lab.may_use_model("m", scopes) and org_wide.may_use_model("m", scopes)
    assert not other.may_use_model("m", scopes)
    assert eu.may_use_model("m", scopes) and not us.may_use_model("m", scopes)
    assert other.may_use_model("unlisted", scopes)
    # The gateway itself and the development principal (no TLS) are unrestricted.
    insecure = Principal("insecure", Role.ADMIN, "default", authenticated_by="insecure")
    assert insecure.may_use_model("m", scopes) and INTERNAL.may_use_model("m", scopes)


async def test_cache_entries_live_in_their_org() -> None:
    cache = OrgScopedCache(MemoryResultCache())
    dp, backend = await _plane(result_cache=cache)
    assert await _as(DEV_A, _req(1.0), dp) == 2.0
    assert await _as(DEV_A2, _req(1.0), dp) == 2.0  # same org: a cache hit
    assert backend.calls == 1
    assert await _as(DEV_B, _req(1.0), dp) == 2.0  # another org computes its own
    assert backend.calls == 2
    # What a globex service stores is never what acme devices read.
    poisoned = CacheEntry.of(
        (await dp.infer(_req(1.0))).__class__("m", "1", {"y": np.full((1, 4), 99.0, np.float32)})
    )
    with acting_as(Principal("svc", Role.SERVICE, "globex")):
        await cache.put("m:1", "0" * 64, poisoned)
        assert await cache.get("m:1", "0" * 64) is not None
    with acting_as(DEV_A):
        assert await cache.get("m:1", "0" * 64) is None
        with pytest.raises(InvalidArgument):
            await cache.get("x" * 257, "0" * 64)
    await dp.close()


def test_the_principal_outside_a_request_is_the_gateway() -> None:
    assert current_principal().subject == "gateway"
    with acting_as(DEV_A):
        assert current_principal() is DEV_A
    assert current_principal().subject == "gateway"


def test_a_payload_digest_must_be_the_payload_s() -> None:
    check_payload_digest(b"", b"anything")  # no digest sent: nothing to check
    check_payload_digest(hashlib.sha256(b"abc").digest(), b"abc")
    with pytest.raises(InvalidArgument, match="payload_digest"):
        check_payload_digest(hashlib.sha256(b"abc").digest(), b"abd")


async def test_a_session_request_whose_digest_lies_fails_alone() -> None:
    dp, _ = await _plane(idempotency=MemoryIdempotencyStore())
    sink = RecordingSink()
    limits = SessionLimits(64, 32, 8, 256, 5.0, 20.0)
    core = SessionCore(dp, limits, ByteBudget(10_000), sink, "dev-a")
    good, bad = header("good"), header("bad")
    for h, digest in ((good, hashlib.sha256(ROW).digest()), (bad, hashlib.sha256(b"x").digest())):
        h.idempotency_key = h.request_id
        h.payload_digest = digest
        h.inline_payload = ROW
        core.on_header(h)
    await asyncio.sleep(0.1)
    assert sink.results == ["good"]
    [(rid, error)] = sink.errors
    assert rid == "bad" and error.code is ErrorCode.INVALID_ARGUMENT
    assert "payload_digest" in error.message
    core.close()
    await dp.close()


async def test_private_results_are_not_shared_within_the_org() -> None:
    cache = OrgScopedCache(MemoryResultCache(), per_principal=True)
    dp, backend = await _plane(result_cache=cache)
    assert await _as(DEV_A, _req(1.0), dp) == 2.0
    assert await _as(DEV_A, _req(1.0), dp) == 2.0  # its own hit
    assert backend.calls == 1
    assert await _as(DEV_A2, _req(1.0), dp) == 2.0  # same org, another device: computed
    assert backend.calls == 2
    await dp.close()


async def test_a_handler_closed_from_another_task_leaves_no_error() -> None:
    """grpc may close a stream handler's generator from another task (a finalizer): leaving
    ``acting_as`` there must not raise (the token belongs to the handler's context)."""

    async def handler() -> AsyncIterator[str]:
        with acting_as(DEV_A):
            yield current_principal().subject
            yield "never"

    gen = handler()

    async def first_step() -> str:  # the call's own task (grpc runs the handler in one)
        return await gen.__anext__()

    assert await asyncio.create_task(first_step()) == "dev-a"
    await asyncio.create_task(gen.aclose())  # closed from another task: no ValueError
    assert current_principal().subject == "gateway"
