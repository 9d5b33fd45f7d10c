"""The policy routes of the REST API (``/v1/policies``, ``/v1/policies/experiments``) on the real
gateway with mutual TLS and role tokens: who may call them, that an operator's change reaches a
device's session as a PolicyUpdate, that an experiment's per-arm results come from outcomes
reported through PolicyService, the audit trail, and what hostile callers get back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from cloud.grpc._policy_converters import context_to_proto
from common.prototime import duration_from_ms
from policy import DecisionContext, PublishRate
from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import LiveGateway, gateway_models, running_gateway


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
    }
    async with running_gateway(
        gateway_models(tmp_path / "models"),
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
    ) as live:
        base = f"https://127.0.0.1:{live.gateway.rest_port}"
        yield Scene(base, world, who, tmp_path, live)


async def _served(scene: Scene) -> dict[str, Any]:
    async with scene.client("observer") as c:
        r = await c.get("/v1/policies")
        assert r.status_code == 200, r.text
        return r.json()


async def test_readers_see_the_served_policy_and_only_operators_change_it(scene: Scene) -> None:
    doc = await _served(scene)
    [default] = doc["classes"]
    assert default["device_class"] == "" and default["kind"] == "heuristic"
    assert default["thresholds"] and default["policy_version"] == 1
    assert set(doc["kinds"]) == {"heuristic", "static", "linucb", "thompson", "dqn"}
    assert doc["kinds"]["dqn"]["params"]["hidden"]["maximum"] == 256
    assert [e["name"] for e in doc["exits"]] == list(default["thresholds"])
    exit1 = next(iter(default["thresholds"]))
    change = {"device_class": "phone", "kind": "heuristic", "thresholds": {exit1: 0.42}}
    for name in ("device", "service", "observer"):
        async with scene.client(name) as c:
            assert (await c.post("/v1/policies", json=change)).status_code == 403, name
            r = await c.post("/v1/policies/experiments", json={"name": "x"})
            assert r.status_code == 403, name
            r = await c.post("/v1/policies/experiments/x/stop")
            assert r.status_code == 403, name
    async with scene.client("device") as c:
        assert (await c.get("/v1/policies")).status_code == 403
    async with scene.client("operator") as c:
        r = await c.post("/v1/policies", json=change)
        assert r.status_code == 200, r.text
        assert r.json()["thresholds"][exit1] == 0.42 and r.json()["policy_version"] == 2
    served = {c["device_class"]: c for c in (await _served(scene))["classes"]}
    assert served["phone"]["thresholds"][exit1] == 0.42
    assert served[""]["thresholds"][exit1] == default["thresholds"][exit1]
    audited = [(e.principal, e.action, e.outcome) for e in scene.live.audit]
    assert ("op-1", "POST /v1/policies", "OK") in audited
    assert ("obs-1", "POST /v1/policies", "PERMISSION_DENIED") in audited
    async with scene.client("observer") as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    assert {"/v1/policies", "/v1/policies/experiments"} <= set(paths)
    assert "post" in paths["/v1/policies/experiments/{name}/stop"]


async def test_a_change_reaches_the_devices_session_as_a_policy_update(scene: Scene) -> None:
    exit1 = next(iter((await _served(scene))["classes"][0]["thresholds"]))
    device = scene.who["device"]
    async with scene.world.channel(scene.live.port, device) as ch:
        call = session_pb2_grpc.SessionServiceStub(ch).Connect()
        await call.write(
            session_pb2.ConnectRequest(
                hello=session_pb2.Hello(
                    device_id="dev-1",
                    protocol_version=1,
                    device_class="phone",
                    capabilities=session_pb2.Capabilities(accepts_policy_updates=True),
                )
            )
        )
        welcome = await asyncio.wait_for(call.read(), 10)
        assert welcome.welcome.policy.policy_version == "1"
        async with scene.client("operator") as c:
            other = {"device_class": "cam", "kind": "heuristic", "thresholds": {exit1: 0.1}}
            assert (await c.post("/v1/policies", json=other)).status_code == 200
            mine = {"device_class": "phone", "kind": "heuristic", "thresholds": {exit1: 0.37}}
            assert (await c.post("/v1/policies", json=mine)).status_code == 200
        msg = await asyncio.wait_for(call.read(), 10)
        assert msg.WhichOneof("frame") == "policy_update"  # the cam's change was not sent here
        assert msg.policy_update.exit_thresholds[exit1] == pytest.approx(0.37)
        assert msg.policy_update.policy_version == "3"
        await call.done_writing()
        call.cancel()


def _decide(device: str, conf: float) -> policy_pb2.DecideRequest:
    ctx = DecisionContext(
        exit_index=0,
        confidences=(conf,),
        rtt_ms=10.0,
        bandwidth_mbps=20.0,
        deadline_ms=100.0,
        device_class="phone",
        device_id=device,
    )
    return policy_pb2.DecideRequest(context=context_to_proto(ctx))


async def test_an_experiment_fills_from_reported_outcomes_and_stops(scene: Scene) -> None:
    exit1 = next(iter((await _served(scene))["classes"][0]["thresholds"]))
    body = {
        "name": "lower-exit1",
        "device_class": "phone",
        "treatment": {"kind": "heuristic", "thresholds": {exit1: 0.0}},
        "split": 0.5,
        "guardrail": {"min_accuracy": 0.5, "min_requests": 1000},
    }
    async with scene.client("operator") as c:
        r = await c.post("/v1/policies/experiments", json=body)
        assert r.status_code == 200, r.text
        assert (await c.post("/v1/policies/experiments", json=body)).status_code == 409
        again = {**body, "name": "second"}
        r = await c.post("/v1/policies/experiments", json=again)
        assert r.status_code == 412 and "already under experiment" in r.json()["message"]
        r = await c.post("/v1/policies", json={"device_class": "phone", "kind": "dqn"})
        assert r.status_code == 412 and "stop it first" in r.json()["message"]
    # A service decides for 60 devices of the class and reports what happened.
    svc = scene.who["service"]
    metadata = svc.metadata()
    treated = 0
    async with scene.world.channel(scene.live.port, svc) as ch:
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        outcomes = []
        for i in range(60):
            d = (await stub.Decide(_decide(f"phone-{i}", 0.05), metadata=metadata)).decision
            in_treatment = d.policy_id.endswith("/lower-exit1")
            treated += in_treatment
            # the treatment exits at once (threshold 0): right half the time, fast
            outcomes.append(
                policy_pb2.Outcome(
                    decision_id=d.decision_id,
                    correct=in_treatment,
                    latency=duration_from_ms(20.0 if in_treatment else 180.0),
                    cloud_cost=0.0 if in_treatment else 0.5,
                )
            )
        ack = await stub.ReportOutcome(
            policy_pb2.ReportOutcomeRequest(outcomes=outcomes), metadata=metadata
        )
        assert ack.accepted == 60
    assert 10 <= treated <= 50
    async with scene.client("observer") as c:
        [exp] = (await c.get("/v1/policies/experiments")).json()["experiments"]
    arms = {name: arm["results"] for name, arm in exp["arms"].items()}
    assert exp["state"] == "running" and exp["created_by"] == "op-1"
    assert arms["treatment"]["requests"] == treated
    assert arms["control"]["requests"] == 60 - treated
    assert arms["treatment"]["accuracy"] == 1.0 and arms["control"]["accuracy"] == 0.0
    assert arms["control"]["breach_rate"] == 1.0 and arms["control"]["mean_cost"] == 0.5
    async with scene.client("operator") as c:
        r = await c.post("/v1/policies/experiments/lower-exit1/stop")
        assert r.status_code == 200 and r.json()["state"] == "stopped"
        assert r.json()["stopped_by"] == "op-1"
        assert (await c.post("/v1/policies/experiments/nope/stop")).status_code == 404
    audited = {(e.principal, e.action, e.outcome) for e in scene.live.audit}
    assert ("op-1", "POST /v1/policies/experiments", "OK") in audited
    assert ("op-1", "POST /v1/policies/experiments/{name}/stop", "OK") in audited


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v1/policies", b"[]", 400, "body"),
        ("/v1/policies", b"{not json", 400, "not JSON"),
        ("/v1/policies", b'{"kind": "ppo"}', 400, "kind"),
        ("/v1/policies", b'{"kind": "heuristic", "thresholds": {"EXIT": NaN}}', 400, "thresholds"),
        ("/v1/policies", b'{"kind": "linucb", "params": {"alpha": NaN}}', 400, "params.alpha"),
        ("/v1/policies", b'{"kind": "linucb", "params": {"alpha": 1e999}}', 400, "params.alpha"),
        ("/v1/policies", b'{"kind": "dqn", "params": {"hidden": 1e12}}', 400, "params.hidden"),
        ("/v1/policies", b'{"kind": "dqn", "device_class": "a/../b"}', 400, "device_class"),
        ("/v1/policies", b'{"kind": "dqn", "state": "AAAA"}', 400, "state"),
        ("/v1/policies", b'{"kind": "dqn", "expected_version": -1}', 400, "expected_version"),
        ("/v1/policies", b'{"kind": "dqn", "expected_version": 7}', 412, "expected_version"),
        ("/v1/policies", b"[" * 50_000 + b"]" * 50_000, 413, ""),
        ("/v1/policies", b'{"kind": "' + b"x" * 70_000 + b'"}', 413, ""),
        ("/v1/policies", b"[" * 10_000 + b"]" * 10_000, 400, "JSON"),
        ("/v1/policies/experiments", b'{"name": "a"}', 400, "treatment"),
        ("/v1/policies/experiments", b'{"name": "a", "treatment": {"kind": "dqn"}, "split": NaN}', 400, "split"),
        ("/v1/policies/experiments", b'{"name": "a", "treatment": {"kind": "dqn"}, "split": 0}', 400, "split"),
        ("/v1/policies/experiments", b'{"name": "a b", "treatment": {"kind": "dqn"}}', 400, "name"),
        ("/v1/policies/experiments", b'{"name": "a", "treatment": {"kind": "x"}}', 400, "treatment.kind"),
        ("/v1/policies/experiments", b'{"name": "a", "treatment": {"kind": "dqn"}, "arms": {}}', 400, "arms"),
    ],
)  # fmt: skip
async def test_hostile_bodies_get_a_precise_status(
    scene: Scene, path: str, body: bytes, status: int, needle: str
) -> None:
    async with scene.client("operator") as c:
        r = await c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["message"].startswith(needle) or needle in r.json()["message"], r.text
    served = (await _served(scene))["classes"]
    assert [c["policy_version"] for c in served] == [1]  # nothing was published


async def test_ten_thousand_experiments_are_bounded(scene: Scene) -> None:
    admin = scene.live.gateway.policy_admin
    # The publish budget with a clock that stands still: what is granted cannot depend on how
    # fast this machine answers 10,000 requests.
    admin.rate = PublishRate(burst=20, per_s=0.5, clock=lambda: 0.0)
    async with scene.client("operator") as c:
        # a few keep-alive connections, each always busy (an idle one may be closed by the
        # server just as the client reuses it)
        limit = asyncio.Semaphore(8)

        async def create(i: int) -> httpx.Response:
            body = {"name": f"e{i}", "device_class": f"c{i}", "treatment": {"kind": "heuristic"}}
            async with limit:
                return await c.post("/v1/policies/experiments", json=body)

        answers = await asyncio.gather(*(create(i) for i in range(10_000)))
        codes: dict[int, int] = {}
        for r in answers:
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
        assert codes == {200: 20, 429: 9_980}, codes
        busy = next(r for r in answers if r.status_code == 429).json()
        assert busy["code"] == "RESOURCE_EXHAUSTED" and "retry in" in busy["message"]
        listed = (await c.get("/v1/policies/experiments")).json()["experiments"]
        assert len(listed) == 20
        # stopping is never refused, even while new changes are
        r = await c.post(f"/v1/policies/experiments/{listed[0]['name']}/stop")
        assert r.status_code == 200 and r.json()["state"] == "stopped"
        # Past the publish budget, the number kept is bounded too: running ones are never
        # evicted, the oldest stopped one makes room.
        admin.rate = PublishRate(burst=10_000)
        more = [await create(i) for i in range(20, 200)]
        assert sum(r.status_code == 200 for r in more) == admin.max_experiments - 19
        last = more[-1].json()
        assert more[-1].status_code == 429 and "at most 100 experiments" in last["message"]
        listed = (await c.get("/v1/policies/experiments")).json()["experiments"]
        assert len(listed) == admin.max_experiments
        assert all(e["state"] == "running" for e in listed)


async def test_outcomes_reported_over_rest_fill_an_experiment(scene: Scene) -> None:
    body = {"name": "rest-fed", "device_class": "phone", "treatment": {"kind": "linucb"}}
    async with scene.client("operator") as c:
        assert (await c.post("/v1/policies/experiments", json=body)).status_code == 200
    context = {
        "exitIndex": 0,
        "exitConfidences": [0.3],
        "deadline": "0.100s",
        "modality": "MODALITY_IMAGE",
        "deviceClass": "phone",
        "bandwidthBps": 2e7,
    }
    async with scene.client("service") as c:
        ids = []
        for i in range(20):
            ctx = {**context, "deviceId": f"phone-{i}"}
            r = await c.post("/v1/policy/decide", json={"context": ctx})
            assert r.status_code == 200, r.text
            ids.append(r.json()["decision"]["decisionId"])
        outcomes = [{"decisionId": d, "correct": True, "latency": "0.030s"} for d in ids]
        r = await c.post("/v1/policy/outcomes", json={"outcomes": outcomes})
        assert r.status_code == 200 and r.json() == {"accepted": 20}, r.text
        again = await c.post("/v1/policy/outcomes", json={"outcomes": outcomes})
        assert again.json() == {}  # each decision counts once (proto3 JSON omits accepted=0)
        many = {"outcomes": [{"decisionId": "x"}] * 10_001}
        r = await c.post("/v1/policy/outcomes", json=many)
        assert r.status_code == 400 and r.json()["message"].startswith("outcomes:")
        r = await c.post("/v1/policy/outcomes", json={"outcomes": [{"latency": "NaN"}]})
        assert r.status_code == 400
    for name in ("device", "observer"):
        async with scene.client(name) as c:
            r = await c.post("/v1/policy/outcomes", json={"outcomes": outcomes})
            assert r.status_code == 403, name
    async with scene.client("observer") as c:
        [exp] = (await c.get("/v1/policies/experiments")).json()["experiments"]
    arms = exp["arms"]
    assert sum(a["results"]["requests"] for a in arms.values()) == 20
    assert all(a["results"]["accuracy"] in (1.0, None) for a in arms.values())
    audited = {(e.principal, e.action) for e in scene.live.audit}
    assert ("svc-1", "POST /v1/policy/outcomes") in audited
