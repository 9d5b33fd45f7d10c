"""The authorization matrix, generated from THE table: every gRPC method and every REST route,
called as every role (and as nobody) against a real gateway over mTLS, answers exactly what the
table says — allowed, or PERMISSION_DENIED / UNAUTHENTICATED (gRPC), 403 / 401 (REST) — and
every refusal leaves an audit event.

Allowed calls carry an empty request: they may fail for what they say (INVALID_ARGUMENT,
NOT_FOUND...), never for who sent them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pool, message_factory

from cloud.authz import GRPC_RULES, REST_RULES, ROLES, Rule
from cloud.core import Role
from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import LiveGateway, gateway_models_dir, running_gateway

__all__ = ["gateway_models_dir"]  # fixture

DENIED = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


@pytest.fixture
def world(tmp_path: Path) -> AuthzWorld:
    return AuthzWorld(tmp_path / "authz")


def _identities(world: AuthzWorld) -> dict[str, Identity]:
    who = {
        role.value: world.client(f"{role.value.lower()}-1", role.value, "acme") for role in ROLES
    }
    who[Role.DEVICE.value] = world.device("dev-a", "acme")
    return who


@pytest.fixture
async def live(world: AuthzWorld, gateway_models_dir: Path) -> AsyncIterator[LiveGateway]:
    async with running_gateway(
        gateway_models_dir,
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
        session={"hello_timeout_s": 1.0},
    ) as gw:
        yield gw


def _message_class(full_name: str) -> Any:
    return message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName(full_name)
    )


def _served_methods(live: LiveGateway) -> dict[str, Any]:
    """Every method the gateway serves (by the descriptors of its services), full name ->
    method descriptor."""
    pool = descriptor_pool.Default()
    methods = {}
    for service in live.gateway.service_names:
        try:
            desc = pool.FindServiceByName(service)
        except KeyError:
            continue
        for m in desc.methods:
            methods[f"/{service}/{m.name}"] = m
    return methods


async def _call(
    channel: grpc.aio.Channel, method: Any, full: str, who: Identity
) -> grpc.StatusCode:
    """Call ``full`` with an empty request; the status it ended with."""
    request = _message_class(method.input_type.full_name)()
    response = _message_class(method.output_type.full_name)
    kind = (method.client_streaming, method.server_streaming)
    ser, de = request.SerializeToString, response.FromString
    try:
        if kind == (False, False):
            await channel.unary_unary(full, ser, de)(request, metadata=who.metadata(), timeout=5)
        elif kind == (False, True):
            async for _ in channel.unary_stream(full, ser, de)(
                request, metadata=who.metadata(), timeout=5
            ):
                pass
        elif kind == (True, False):
            await channel.stream_unary(full, ser, de)(
                iter([request]), metadata=who.metadata(), timeout=5
            )
        else:
            call = channel.stream_stream(full, ser, de)(metadata=who.metadata(), timeout=5)
            await call.write(request)
            await call.done_writing()
            async for _ in call:
                pass
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _expected(rule: Rule, role: str) -> set[grpc.StatusCode] | None:
    """None: allowed (any status but a refusal); else the refusal."""
    if rule.public or Role(role) in rule.roles:
        return None
    return {grpc.StatusCode.PERMISSION_DENIED}


async def test_every_served_grpc_method_is_in_the_table(live: LiveGateway) -> None:
    served = _served_methods(live)
    assert len(served) > 20
    missing = sorted(m for m in served if m not in GRPC_RULES)
    assert not missing, f"served but not in cloud/authz/_table.py: {missing}"


async def test_grpc_matrix_every_method_times_every_role(
    live: LiveGateway, world: AuthzWorld
) -> None:
    served = _served_methods(live)
    who = _identities(world)
    who["nobody"] = world.anonymous()
    channels = {name: world.channel(live.port, ident) for name, ident in who.items()}
    cells = 0
    try:
        for full, method in served.items():
            rule = GRPC_RULES[full]
            for name, ident in who.items():
                before = len(live.audit)
                code = await _call(channels[name], method, full, ident)
                cells += 1
                if name == "nobody":
                    want = None if rule.public else {grpc.StatusCode.UNAUTHENTICATED}
                else:
                    want = _expected(rule, name)
                if want is None:
                    assert code not in DENIED, f"{name} -> {full}: {code}"
                    continue
                assert code in want, f"{name} -> {full}: {code}, expected {want}"
                refusals = [e for e in live.audit[before:] if e.action == full]
                assert refusals and refusals[-1].outcome == code.name, f"{name} -> {full}"
                assert refusals[-1].principal == ("anonymous" if name == "nobody" else ident.name)
    finally:
        for channel in channels.values():
            await channel.close()
    assert cells == len(served) * len(who)


def _rest_path(route: str) -> str:
    return route.replace("{name}", "m").replace("{version}", "1")


async def test_rest_matrix_every_route_times_every_role(
    live: LiveGateway, world: AuthzWorld, tmp_path: Path
) -> None:
    app_routes = {
        (verb, str(r.path))
        for r in live.gateway.rest.app().routes
        for verb in (getattr(r, "methods", None) or ())
        if verb != "HEAD"
    }
    missing = sorted(r for r in app_routes if r not in REST_RULES)
    assert not missing, f"REST routes not in cloud/authz/_table.py: {missing}"
    who = _identities(world)
    who["nobody"] = world.anonymous()
    base = f"https://127.0.0.1:{live.gateway.rest_port}"
    for name, ident in who.items():
        ctx = world.ssl_context(ident, tmp_path / "clients")
        async with httpx.AsyncClient(verify=ctx, base_url=base, timeout=10) as client:
            for verb, route in sorted(app_routes):
                rule = REST_RULES[(verb, route)]
                before = len(live.audit)
                kwargs: dict[str, Any] = {"headers": ident.headers()}
                if verb == "POST":
                    kwargs["content"] = b"{}"
                    kwargs["headers"] = {**ident.headers(), "content-type": "application/json"}
                r = await client.request(verb, _rest_path(route), **kwargs)
                cell = f"{name} -> {verb} {route}: {r.status_code} {r.text[:120]}"
                if rule.public:
                    assert r.status_code not in (401, 403), cell
                elif name == "nobody":
                    assert r.status_code == 401, cell
                    assert r.headers["www-authenticate"].startswith("Bearer")
                elif Role(name) in rule.roles:
                    assert r.status_code not in (401, 403), cell
                else:
                    assert r.status_code == 403, cell
                    assert r.json()["code"] == "PERMISSION_DENIED"
                if r.status_code in (401, 403):
                    events = [e for e in live.audit[before:] if e.action == f"{verb} {route}"]
                    assert events and events[-1].outcome in ("UNAUTHENTICATED", "PERMISSION_DENIED")


async def test_tokens_that_do_not_hold_are_unauthenticated(
    live: LiveGateway, world: AuthzWorld
) -> None:
    from common.auth import generate_signing_key, issue_token

    op = world.client("op-1", "Operator", "acme")
    device = world.device("dev-a", "acme")
    forged = issue_token(generate_signing_key(), "op-1", "Admin", "acme")  # unknown key
    expired = issue_token(world.signing_key, "op-1", "Admin", "acme", ttl_s=1, now=1_000_000)
    wrong_aud = issue_token(world.signing_key, "op-1", "Admin", "acme", audience="elsewhere")
    not_a_role = issue_token(world.signing_key, "op-1", "Root", "acme")
    unbound_device = issue_token(world.signing_key, "dev-a", "Device", "acme")
    bound_elsewhere = issue_token(
        world.signing_key, "op-1", "Admin", "acme", cert_der=device.cert_der()
    )
    admin_on_device_cert = issue_token(world.signing_key, "op-1", "Admin", "acme")
    method = "/aiml021.registry.v1.ModelRegistryService/ListModels"
    served = _served_methods(live)[method]
    cases = [
        (op, forged, "signature"),
        (op, expired, "expired"),
        (op, wrong_aud, "aud"),
        (op, not_a_role, "not a role"),
        (device, unbound_device, "bound"),
        (op, bound_elsewhere, "another client certificate"),
        (device, admin_on_device_cert, "device certificate"),
        (op, "garbage", "malformed"),
    ]
    for ident, token, why in cases:
        probe = Identity(ident.name, ident.role, ident.org, ident.cert_pem, ident.key_pem, token)
        async with world.channel(live.port, probe) as channel:
            code = await _call(channel, served, method, probe)
        assert code == grpc.StatusCode.UNAUTHENTICATED, why
        assert why in live.audit[-1].detail, (why, live.audit[-1].detail)
    # A device token bound to the device's own certificate is accepted.
    bound = issue_token(
        world.signing_key, "dev-a", "Device", "acme", cert_der=device.cert_der(), ttl_s=300
    )
    ok = Identity("dev-a", "Device", "acme", device.cert_pem, device.key_pem, bound)
    async with world.channel(live.port, ok) as channel:
        assert await _call(channel, served, method, ok) == grpc.StatusCode.OK


async def test_audit_events_arrive_in_order_under_concurrent_refusals(
    live: LiveGateway, world: AuthzWorld
) -> None:
    device = world.device("dev-b", "globex")
    method = "/aiml021.deploy.v1.DeployService/SetRollout"
    served = _served_methods(live)[method]
    async with world.channel(live.port, device) as channel:
        codes = await asyncio.gather(*[_call(channel, served, method, device) for _ in range(20)])
    assert set(codes) == {grpc.StatusCode.PERMISSION_DENIED}
    mine = [e for e in live.audit if e.principal == "dev-b"]
    assert len(mine) == 20 and {e.org for e in mine} == {"globex"}


async def test_names_a_caller_chooses_never_become_metric_labels(
    live: LiveGateway, world: AuthzWorld
) -> None:
    from prometheus_client import generate_latest

    device = world.device("dev-a", "acme")
    served = _served_methods(live)
    infer = KSERVE_INFER
    request = _message_class(served[infer].input_type.full_name)(model_name="evil_label_x")
    response = _message_class(served[infer].output_type.full_name)
    async with world.channel(live.port, device) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(infer, request.SerializeToString, response.FromString)(
                request, timeout=5
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        put = "/aiml021.cache.v1.CacheService/Put"
        bad = _message_class(served[put].input_type.full_name)(model_name="evil_label_y")
        out = _message_class(served[put].output_type.full_name)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(put, bad.SerializeToString, out.FromString)(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    text = generate_latest(live.gateway.metrics.registry).decode()
    assert "evil_label" not in text
    assert live.gateway.settings.metrics.host == "127.0.0.1"  # the metrics port is loopback


KSERVE_INFER = "/inference.GRPCInferenceService/ModelInfer"


async def test_rest_checks_token_binding_against_the_tls_client_certificate(
    live: LiveGateway, world: AuthzWorld, tmp_path: Path
) -> None:
    from common.auth import issue_token

    device, other = world.device("dev-a", "acme"), world.device("dev-z", "acme")
    own = issue_token(world.signing_key, "dev-a", "Device", "acme", cert_der=device.cert_der())
    stolen = issue_token(world.signing_key, "dev-z", "Device", "acme", cert_der=other.cert_der())
    ctx = world.ssl_context(device, tmp_path / "rest-binding")
    base = f"https://127.0.0.1:{live.gateway.rest_port}"
    async with httpx.AsyncClient(verify=ctx, base_url=base, timeout=10) as client:
        ok = await client.get("/v1/models", headers={"authorization": f"Bearer {own}"})
        assert ok.status_code == 200, ok.text
        bad = await client.get("/v1/models", headers={"authorization": f"Bearer {stolen}"})
        assert bad.status_code == 401 and "another client certificate" in bad.text
