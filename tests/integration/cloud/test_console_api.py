"""The REST routes the operator console adds (``/v1/console/summary``, ``/v1/console/simulate``)
and its static mount, on the real gateway with mutual TLS and role tokens: who may call them,
what hostile bodies get back, that one simulation runs at a time, that the static mount serves
only the built console."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import gateway_models, running_gateway


@dataclass
class Scene:
    base: str
    world: AuthzWorld
    who: dict[str, Identity]
    tmp: Path

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
        "admin": world.client("admin-1", "Admin", "globex"),
    }
    async with running_gateway(
        gateway_models(tmp_path / "models"),
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
    ) as live:
        yield Scene(f"https://127.0.0.1:{live.gateway.rest_port}", world, who, tmp_path)


async def test_summary_is_for_readers_and_names_the_callers_org(scene: Scene) -> None:
    for name, status in {"device": 403, "service": 200, "observer": 200, "admin": 200}.items():
        async with scene.client(name) as c:
            r = await c.get("/v1/console/summary")
            assert r.status_code == status, (name, r.text)
            if status == 200:
                body = r.json()
                assert body["cost"]["org"] == scene.who[name].org
                assert set(body) >= {"requests", "cache", "sla", "latency_heatmap", "cost"}
    async with scene.client("observer") as c:
        for bad in ("abc", "0", "-5", "1e9", "nan", "inf"):
            r = await c.get("/v1/console/summary", params={"deadline_ms": bad})
            assert r.status_code == 400 and "deadline_ms" in r.json()["message"], bad


async def test_simulation_needs_operator_and_compares_against_the_static_baseline(
    scene: Scene,
) -> None:
    body = {"policy": "linucb", "scenario": "varying", "requests": 300, "seed": 3}
    for name in ("device", "service", "observer"):
        async with scene.client(name) as c:
            assert (await c.post("/v1/console/simulate", json=body)).status_code == 403, name
    async with scene.client("operator") as c:
        r = await c.post("/v1/console/simulate", json=body)
        assert r.status_code == 200, r.text
        runs = r.json()["runs"]
        assert [run["policy"] for run in runs] == ["static", "linucb"]
        for run in runs:
            assert 0.0 <= run["summary"]["accuracy"] <= 1.0
            assert run["series"][-1]["request"] >= 300 - 300 // 50
        again = (await c.post("/v1/console/simulate", json=body)).json()
        assert again == r.json()  # the same seed replays the same run


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[]", "JSON object"),
        (b"{not json", "not JSON"),
        (b'{"requests": 1000000000}', "requests"),
        (b'{"requests": 99}', "requests"),
        (b'{"requests": 1000.0}', "requests"),
        (b'{"requests": true}', "requests"),
        (b'{"policy": "ppo"}', "policy"),
        (b'{"policy": ["static"]}', "policy"),
        (b'{"scenario": "__class__"}', "scenario"),
        (b'{"seed": -1}', "seed"),
        (b'{"deadline_ms": NaN}', "deadline_ms"),
        (b'{"deadline_ms": 1e308}', "deadline_ms"),
        (b'{"trace": "/etc/passwd"}', "unknown fields"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
async def test_hostile_simulation_bodies_are_refused(
    scene: Scene, body: bytes, needle: str
) -> None:
    async with scene.client("operator") as c:
        r = await c.post(
            "/v1/console/simulate", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code in (400, 413), r.text
        assert needle in r.json()["message"] or r.status_code == 413


async def test_one_simulation_at_a_time(scene: Scene) -> None:
    body = {"policy": "thompson", "requests": 5000}
    async with scene.client("operator") as c:
        answers = await asyncio.gather(
            *(c.post("/v1/console/simulate", json=body) for _ in range(4))
        )
    codes = sorted(r.status_code for r in answers)
    assert codes[0] == 200 and 429 in codes, codes
    busy = next(r for r in answers if r.status_code == 429)
    assert busy.json()["code"] == "RESOURCE_EXHAUSTED"


async def test_static_mount_serves_the_console_and_nothing_else(scene: Scene) -> None:
    async with scene.client("device") as c:
        index = await c.get("/console/")
        assert index.status_code == 200 and 'id="root"' in index.text
        for path in (
            "/console/../pyproject.toml",
            "/console/%2e%2e/pyproject.toml",
            "/console/..%2f..%2fpyproject.toml",
            "/console/%2e%2e%2f%2e%2e%2fcloud/rest/_console.py",
            "/console/nope.js",
        ):
            r = await c.get(path)
            assert r.status_code == 404 or "[project]" not in r.text, path
            assert "[project]" not in r.text and "ConsoleRoutes" not in r.text, path
        # Only GET is in the table: anything else on the mount is refused before the files.
        assert (await c.post("/console/", content=b"x")).status_code == 403
        assert (await c.delete("/console/index.html")).status_code == 403
