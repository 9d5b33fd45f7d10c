"""The console's settings routes (``GET /v1/console/settings``, ``PUT /v1/console/budget``) on the
real gateway with mutual TLS and role tokens: only an Admin changes a budget, only their own
organisation's (the org comes from the token, never from the body), every call is audited, hostile
bodies are refused before anything changes, and the change steers what the gateway reports."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import LiveGateway, gateway_models, running_gateway

ROUTE = "/v1/console/budget"


@dataclass
class Scene:
    base: str
    world: AuthzWorld
    who: dict[str, Identity]
    tmp: Path
    live: LiveGateway

    def client(self, name: str) -> httpx.AsyncClient:
        ident = self.who[name]
        ctx = self.world.ssl_context(ident, self.tmp / "clients" / name)
        return httpx.AsyncClient(
            base_url=self.base, verify=ctx, headers=ident.headers(), timeout=60
        )


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    world = AuthzWorld(tmp_path / "authz")
    who = {
        "device": world.device("dev-1", "acme"),
        "service": world.client("svc-1", "Service", "acme"),
        "observer": world.client("obs-1", "Observer", "acme"),
        "operator": world.client("op-1", "Operator", "acme"),
        "admin": world.client("admin-1", "Admin", "acme"),
        "other_admin": world.client("admin-2", "Admin", "globex"),
    }
    async with running_gateway(
        gateway_models(tmp_path / "models"),
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
        accounting={"budgets": {"globex": {"amount": 3.0, "period_s": 3600}}},
        privacy={"dlp_kinds": ["email", "phone"]},
    ) as live:
        yield Scene(f"https://127.0.0.1:{live.gateway.rest_port}", world, who, tmp_path, live)


async def _budget(scene: Scene, name: str) -> dict[str, object]:
    async with scene.client(name) as c:
        r = await c.get("/v1/console/settings")
        assert r.status_code == 200, r.text
        return dict(r.json()["budget"])


async def test_settings_are_for_readers_and_show_switches_never_keys(scene: Scene) -> None:
    for name, status in {"device": 403, "service": 200, "observer": 200, "operator": 200}.items():
        async with scene.client(name) as c:
            r = await c.get("/v1/console/settings")
            assert r.status_code == status, (name, r.text)
    async with scene.client("observer") as c:
        body = (await c.get("/v1/console/settings")).json()
    assert body["privacy"] == {
        "pseudonyms": False,
        "dlp": True,
        "dlp_kinds": ["email", "phone"],
        "sealed_at_rest": False,
    }
    # acme has no budget; globex's is not shown to acme
    assert body["budget"] == {
        "org": "acme",
        "amount": None,
        "period_s": None,
        "spent": 0.0,
        "writable": True,
        "note": "",
    }
    assert (await _budget(scene, "other_admin"))["amount"] == 3.0


async def test_an_admin_sets_their_own_orgs_budget_and_it_is_audited(scene: Scene) -> None:
    async with scene.client("admin") as c:
        r = await c.put(ROUTE, json={"amount": 7.5})
        assert r.status_code == 200, r.text
        assert r.json()["budget"]["amount"] == 7.5 and r.json()["budget"]["org"] == "acme"
        summary = (await c.get("/v1/console/summary")).json()
    assert summary["cost"]["budget"] == 7.5  # the gauge devices' steering and alerts read
    assert (await _budget(scene, "observer"))["amount"] == 7.5
    assert (await _budget(scene, "observer"))["period_s"] == 86400.0
    # the other org's budget (and its period) is untouched
    other = await _budget(scene, "other_admin")
    assert other["amount"] == 3.0 and other["period_s"] == 3600.0
    async with scene.client("other_admin") as c:
        r = await c.put(ROUTE, json={"amount": 4})
        assert r.status_code == 200 and r.json()["budget"]["period_s"] == 3600.0, r.text
    assert (await _budget(scene, "admin"))["amount"] == 7.5
    audited = [(e.principal, e.org, e.action, e.outcome, e.detail) for e in scene.live.audit]
    # the audit trail says what changed: the org, the new amount and the one it replaced
    assert ("admin-1", "acme", f"PUT {ROUTE}", "OK", "acme: 7.5 (was none)") in audited
    assert ("admin-2", "globex", f"PUT {ROUTE}", "OK", "globex: 4 (was 3)") in audited


async def test_only_an_admin_may_write_and_refusals_are_audited(scene: Scene) -> None:
    for name in ("device", "service", "observer", "operator"):
        async with scene.client(name) as c:
            r = await c.put(ROUTE, json={"amount": 1})
            assert r.status_code == 403 and r.json()["code"] == "PERMISSION_DENIED", name
    refused = {e.principal for e in scene.live.audit if e.outcome == "PERMISSION_DENIED"}
    assert refused >= {"svc-1", "obs-1", "op-1"}
    assert (await _budget(scene, "observer"))["amount"] is None
    scene.who["nobody"] = scene.world.anonymous()
    async with scene.client("nobody") as c:
        assert (await c.put(ROUTE, json={"amount": 1})).status_code == 401


@pytest.mark.parametrize(
    ("body", "headers", "status", "says"),
    [
        (b"not json", {}, 400, "not JSON"),
        (b"[1, 2]", {}, 400, "JSON object"),
        (b"{}", {}, 400, "amount"),
        (b'{"amount": "5"}', {}, 400, "amount"),
        (b'{"amount": true}', {}, 400, "amount"),
        (b'{"amount": -1}', {}, 400, "amount"),
        (b'{"amount": 1e300}', {}, 400, "amount"),
        (b'{"amount": NaN}', {}, 400, "amount"),
        (b'{"amount": Infinity}', {}, 400, "amount"),
        (b'{"amount": 5, "org": "globex"}', {}, 400, "unknown fields: org"),
        (b'{"amount": 5, "period_s": 1}', {}, 400, "unknown fields: period_s"),
        (b"[" * 5000 + b"]" * 5000, {}, 413, "exceeds"),
        (b'{"amount": 5, "pad": "' + b"x" * 2048 + b'"}', {}, 413, "exceeds"),
        (
            gzip.compress(b'{"amount": 5, "p": "' + b" " * 100_000 + b'"}'),
            {"content-encoding": "gzip"},
            413,
            "exceeds",
        ),
        (b"[" * 400 + b"]" * 400, {}, 400, "JSON object"),
    ],
)
async def test_hostile_bodies_change_nothing(
    scene: Scene, body: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    async with scene.client("admin") as c:
        r = await c.put(
            ROUTE, content=body, headers={"content-type": "application/json", **headers}
        )
    assert r.status_code == status, r.text
    assert says in r.json()["message"], r.text
    assert (await _budget(scene, "observer"))["amount"] is None
    assert (await _budget(scene, "other_admin"))["amount"] == 3.0
