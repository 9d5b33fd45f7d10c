"""The operator console in real headless Chromium (Debian's ``chromium``, driven by
playwright-core from node: ``console/tests/e2e.mjs``) against the real gateway with mutual TLS and
role tokens: an Admin adds a model with the wizard by keyboard alone, an Operator sets a 10 %
canary and the gateway routes about a tenth of the requests to the candidate, rolls back, toggles
shadow and runs a policy simulation; an Observer sees no write controls and the gateway refuses
its writes; axe-core (WCAG 2.1 A/AA) finds no violation on any page in either theme.

``CONSOLE_SCREENSHOTS=DIR`` keeps the screenshots in DIR (docs/console/ is made that way)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import BUNDLE, gateway_models, running_gateway, vector_model

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "console"
CHROMIUM = Path("/usr/bin/chromium")
CANARY_MODEL = "clf"
REQUESTS = 400


def _built_console() -> Path:
    """console/dist, built when missing or older than the sources."""
    dist = CONSOLE / "dist" / "index.html"
    sources = [p for p in (CONSOLE / "src").rglob("*") if p.is_file()]
    extra = [CONSOLE / name for name in ("index.html", "vite.config.ts", "tsconfig.json")]
    newest = max(p.stat().st_mtime for p in [*sources, *extra])
    if not dist.exists() or dist.stat().st_mtime < newest:
        subprocess.run(["npm", "run", "build"], cwd=CONSOLE, check=True, timeout=600)
    return dist.parent


def _two_versions(root: Path) -> None:
    """A Triton model directory serving versions 1 and 2 of the vector model."""
    model = root / CANARY_MODEL
    for version in ("1", "2"):
        vector_model(model / version / "model.onnx")
    (model / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 8\nversion_policy: { all {} }\n'
    )


DEVICE_CLASSES = {"phone": 12, "camera": 6}


async def _session_requests(world: AuthzWorld, device: Identity, port: int) -> int:
    """The device sends whole-model requests of ``m`` on its session stream, declaring a device
    class in each request context (the heatmap's device-class rows); returns the answers."""
    classes = [c for c, n in DEVICE_CLASSES.items() for _ in range(n)]
    async with world.channel(port, device) as channel:
        call = session_pb2_grpc.SessionServiceStub(channel).Connect()
        hello = session_pb2.Hello(device_id="dev-1", protocol_version=1)
        await call.write(session_pb2.ConnectRequest(hello=hello))
        for i, device_class in enumerate(classes):
            data = np.array([[1, 2, 3, i]], np.float32).tobytes()
            h = session_pb2.InferHeader(
                request_id=f"s{i}",
                model_name="m",
                total_bytes=len(data),
                context=request_pb2.RequestContext(region="us-east", device_class=device_class),
                payload=data,
            )
            h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
            h.encoding.shape.extend([1, 4])
            await call.write(session_pb2.ConnectRequest(infer_header=h))
        answered = 0
        while answered < len(classes):
            msg = await asyncio.wait_for(call.read(), 30)
            assert isinstance(msg, session_pb2.ConnectResponse), msg
            assert msg.WhichOneof("frame") != "infer_error", msg
            answered += msg.WhichOneof("frame") == "infer_result"
        await call.done_writing()
        call.cancel()
    return answered


POLICY_CLASS, POLICY_THRESHOLD = "phone", 0.55


async def _watch_policy(
    world: AuthzWorld, device: Identity, port: int, updates: list[session_pb2.ConnectResponse]
) -> None:
    """A device session of class ``POLICY_CLASS`` that accepts policy updates: every
    PolicyUpdate it receives lands in ``updates`` (pinging so the session stays open) until
    cancelled."""
    async with world.channel(port, device) as channel:
        call = session_pb2_grpc.SessionServiceStub(channel).Connect()
        caps = session_pb2.Capabilities(accepts_policy_updates=True)
        hello = session_pb2.Hello(
            device_id="dev-1", protocol_version=1, device_class=POLICY_CLASS, capabilities=caps
        )
        await call.write(session_pb2.ConnectRequest(hello=hello))

        async def ping() -> None:
            for nonce in range(1, 10_000):
                await asyncio.sleep(15)
                await call.write(session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=nonce)))

        pinger = asyncio.create_task(ping())
        try:
            while True:
                msg = await call.read()
                if not isinstance(msg, session_pb2.ConnectResponse):
                    return
                if msg.WhichOneof("frame") == "policy_update":
                    updates.append(msg)
        finally:
            pinger.cancel()
            call.cancel()


# One browser session runs every flow: on a loaded 2-core box that takes longer than the suite's
# default 300 s (node itself is given 540 s below, the console build up to 600 s when stale).
@pytest.mark.timeout(1200)
async def test_console_flows_in_chromium(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian's chromium package is a system dependency (make setup)"
    _built_console()
    models = gateway_models(tmp_path / "models")
    _two_versions(models)
    world = AuthzWorld(tmp_path / "authz")
    who = {
        "admin": world.client("console-admin", "Admin", "acme"),
        "operator": world.client("console-operator", "Operator", "acme"),
        "observer": world.client("console-observer", "Observer", "acme"),
    }
    ids: dict[str, dict[str, str]] = {}
    for role, ident in who.items():
        cert, key = tmp_path / f"{role}.pem", tmp_path / f"{role}.key"
        cert.write_bytes(ident.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(ident.key_pem)
        ids[role] = {"cert": str(cert), "key": str(key), "token": str(ident.token)}
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    device = world.device("dev-1", "acme")
    async with running_gateway(
        models,
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
        observability={"region": "eu-west", "regions": ["eu-west", "us-east"]},
        accounting={
            "prices": {"per_cpu_ms": 0.01, "per_egress_gb": 1.0},
            "budgets": {"acme": {"amount": 5.0}},
            "devices": {"dev-1": "acme"},
        },
    ) as live:
        base = f"https://127.0.0.1:{live.gateway.rest_port}"
        admin_tls = world.ssl_context(who["admin"], tmp_path / "client")
        async with httpx.AsyncClient(
            base_url=base, verify=admin_tls, headers=who["admin"].headers(), timeout=30
        ) as admin:
            # The wizard adds a model the repository holds but the gateway does not serve yet.
            r = await admin.post(f"/v2/repository/models/{BUNDLE}/unload")
            assert r.status_code == 200, r.text
            assert (await admin.get(f"/v2/models/{BUNDLE}/ready")).status_code != 200
            # A device reports 100 requests: 60 answered by an early exit, 30 offloaded, 10 cache,
            # with calibrated confidences 0.95, 0.8 and 0.9 (expected accuracy 90 %).
            device_tls = world.ssl_context(device, tmp_path / "device")
            routes = ["ROUTE_EDGE"] * 60 + ["ROUTE_CLOUD"] * 30 + ["ROUTE_CACHE"] * 10
            confidence = {"ROUTE_EDGE": 0.95, "ROUTE_CLOUD": 0.8, "ROUTE_CACHE": 0.9}
            batch = {
                "deviceId": "dev-1",
                "region": "us-east",
                "events": [{"route": r, "confidence": confidence[r]} for r in routes],
            }
            answered = await _session_requests(world, device, live.gateway.port)
            assert answered == sum(DEVICE_CLASSES.values())
            async with httpx.AsyncClient(base_url=base, verify=device_tls, timeout=30) as dev:
                r = await dev.post("/v1/telemetry", json={"batch": batch})
                assert r.status_code == 200 and r.json() == {"accepted": 100}, r.text
                # ... and offloads 20 requests (billed to its org, acme)
                x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
                for i in range(20):
                    r = await dev.post("/v2/models/m/infer", json={"id": f"d{i}", "inputs": [x]})
                    assert r.status_code == 200, r.text
            page = await admin.get("/console/")
            assert page.status_code == 200 and '<div id="root">' in page.text
            # a phone whose session hears of the operator's policy change
            pushed: list[session_pb2.ConnectResponse] = []
            watcher = asyncio.create_task(_watch_policy(world, device, live.gateway.port, pushed))
            config = tmp_path / "console.json"
            config.write_text(
                json.dumps(
                    {
                        "base": base,
                        "chromium": str(CHROMIUM),
                        "identities": ids,
                        "wizard_model": BUNDLE,
                        "canary_model": CANARY_MODEL,
                        "requests": REQUESTS,
                        "policy_class": POLICY_CLASS,
                        "policy_threshold": POLICY_THRESHOLD,
                        "screenshots": str(shots),
                        "results": str(tmp_path / "results.json"),
                    }
                )
            )
            node = shutil.which("node")
            assert node is not None
            proc = await asyncio.create_subprocess_exec(
                node,
                str(CONSOLE / "tests" / "e2e.mjs"),
                str(config),
                cwd=CONSOLE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout=540)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            log = out.decode(errors="replace")
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            results = json.loads((tmp_path / "results.json").read_text())
            assert proc.returncode == 0, log
            assert results["failures"] == [], log

            # What the browser did, seen through the gateway's public API.
            assert (await admin.get(f"/v2/models/{BUNDLE}/ready")).status_code == 200
            rollout = (await admin.get(f"/v1/deploy/rollouts/{CANARY_MODEL}")).json()["rollout"]
            assert rollout["mode"] == "ROLLOUT_MODE_NONE" and rollout["stableVersion"] == "1"
            # The threshold the operator typed reached the phone's session as a PolicyUpdate.
            exit_name = results["policy"]["exit"]
            thresholds = [dict(m.policy_update.exit_thresholds) for m in pushed]
            assert any(t.get(exit_name) == pytest.approx(POLICY_THRESHOLD) for t in thresholds), (
                thresholds
            )
            [exp] = (await admin.get("/v1/policies/experiments")).json()["experiments"]
            assert exp["name"] == "console-ab" and exp["created_by"] == "console-operator"
            assert exp["state"] == "stopped" and exp["arms"]["treatment"]["kind"] == "linucb"
        routed = results["routing"]["canary"]
        assert sum(routed.values()) == REQUESTS and set(routed) == {"1", "2"}
        assert 0.04 * REQUESTS <= routed["2"] <= 0.2 * REQUESTS, routed
        # Management actions from the console are audited under the operator's name.
        audited = {(e.principal, e.action) for e in live.audit}
        assert ("console-operator", "POST /v1/deploy/canary") in audited
        assert ("console-operator", "POST /v1/policies") in audited
        assert ("console-operator", "POST /v1/policies/experiments/{name}/stop") in audited
        assert ("console-admin", "POST /v2/repository/models/{name}/load") in audited
        assert ("console-admin", "PUT /v1/console/budget") in audited
        refused = [e for e in live.audit if e.principal == "console-observer"]
        assert refused and all(e.outcome == "PERMISSION_DENIED" for e in refused)
    axe = {page: found for page, found in results["axe"].items()}
    assert len(axe) >= 13 and all(found == [] for found in axe.values()), axe
    for name in ("overview", "models", "policies", "deployments", "monitoring", "settings"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chromium and httpx talk to 127.0.0.1 directly.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
