"""Privacy end to end against the real gateway: offloaded features are clipped and noised, the
device's budget is enforced and survives restarts, and what the gateway records names the device
only by its pseudonym."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from aiml021.session.v1 import session_pb2

import common.codecs as codecs
from common.errors import InvalidArgument
from common.privacy import Pseudonymiser, is_pseudonym
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Route
from tests.support.edge_bundle import images
from tests.support.gateway import running_gateway


def _settings(bundle: Path, port: int, **kw: object) -> EdgeSettings:
    base: dict[str, object] = {
        "bundle": bundle,
        "tls.insecure": True,
        "gateway": f"127.0.0.1:{port}",
        "routing.sla_ms": 3000,
        "cache.entries": 0,
        "telemetry.interval_s": 0.05,
    }
    return EdgeSettings(**nest({**base, **kw}))


def _sent(headers: Sequence[session_pb2.InferHeader]) -> list[np.ndarray]:
    return [np.asarray(codecs.decode(h.payload)) for h in headers]


def _raw(agent: EdgeAgent, image: np.ndarray, cut: str) -> np.ndarray:
    state = agent.runtime.start(agent.runtime.prepare(image))
    while cut not in state.tensors:
        agent.runtime.step(state)
    return np.asarray(state.tensors[cut])


async def test_dp_is_off_by_default_and_features_leave_unchanged(
    bundle_dir: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        async with EdgeAgent(_settings(bundle_dir, gw.port)) as agent:
            assert agent.privacy is None
            assert await agent.wait_connected(5)
            img = images(1)[0]
            result = await agent.infer(img)
            assert result.route is Route.CLOUD
            cut = gw.frames.headers[0].cut_point
            assert np.array_equal(_sent(gw.frames.headers)[0], _raw(agent, img, cut))


async def test_offloaded_features_are_clipped_and_noised(
    bundle_dir: Path, gateway_models_dir: Path
) -> None:
    dp = {"privacy.enabled": True, "privacy.epsilon": 8.0, "privacy.clip_norm": 1.0}
    async with running_gateway(gateway_models_dir) as gw:
        async with EdgeAgent(_settings(bundle_dir, gw.port, **dp)) as agent:
            assert await agent.wait_connected(5)
            imgs = images(4)
            results = await asyncio.gather(*(agent.infer(im) for im in imgs))
            assert all(r.route is Route.CLOUD for r in results)
            privacy = agent.privacy
            assert privacy is not None
            by_id = {r.request_id: im for r, im in zip(results, imgs, strict=True)}
            noises: dict[str, list[np.ndarray]] = {}
            for header, sent in zip(gw.frames.headers, _sent(gw.frames.headers), strict=True):
                mech = privacy.mechanisms[header.cut_point]
                raw = _raw(agent, by_id[header.request_id], header.cut_point)
                assert np.linalg.norm(raw) > 1.0  # so clipping had work to do
                noises.setdefault(header.cut_point, []).append(sent - mech.clip(raw))
            assert sum(len(parts) for parts in noises.values()) == 4
            for cut, parts in noises.items():
                mech, noise = privacy.mechanisms[cut], np.concatenate([n.ravel() for n in parts])
                # What left is the clipped tensor plus noise of the calibrated scale, within 5
                # standard errors of a sample standard deviation (4 x 392 values: +-9%; one
                # tensor's 392 alone missed a fixed 10% in about 1 run in 50).
                rel = 5 / np.sqrt(2 * (noise.size - 1))
                assert float(noise.std()) == pytest.approx(mech.sigma, rel=rel)
                assert abs(float(noise.mean())) < 5 * mech.sigma / np.sqrt(noise.size)
            assert privacy.accountant.releases == {mech.noise_multiplier: 4}


async def test_spent_budget_keeps_features_on_the_device_across_restarts(
    bundle_dir: Path, gateway_models_dir: Path, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger" / "privacy.json"
    dp = {
        "privacy.enabled": True,
        "privacy.epsilon": 4.0,
        "privacy.clip_norm": 1.0,
        "privacy.budget_epsilon": 7.0,  # room for two releases at ε=4 (RDP composition)
        "privacy.accountant_path": ledger,
    }
    async with running_gateway(gateway_models_dir) as gw:
        async with EdgeAgent(_settings(bundle_dir, gw.port, **dp)) as agent:
            assert await agent.wait_connected(5)
            routes = [(await agent.infer(im)).route for im in images(2)]
            assert routes == [Route.CLOUD, Route.CLOUD]
            refused = await agent.infer(images(1, seed=9)[0])
            assert refused.route is Route.EDGE and refused.bytes_sent == 0
            assert refused.error and "privacy budget" in refused.error
            assert refused.exit_name == "final"  # answered by the device's own best exit
        sent_before = len(gw.frames.headers)
        assert sent_before == 2
        async with EdgeAgent(_settings(bundle_dir, gw.port, **dp)) as agent:
            assert await agent.wait_connected(5)
            again = await agent.infer(images(1, seed=10)[0])
            assert again.route is Route.EDGE and "privacy budget" in (again.error or "")
        assert len(gw.frames.headers) == sent_before  # nothing more left the device


async def test_privacy_on_without_a_clipping_norm_refuses_to_start(bundle_dir: Path) -> None:
    settings = EdgeSettings(
        **nest({"bundle": bundle_dir, "privacy.enabled": True, "privacy.epsilon": 1.0})
    )
    with pytest.raises(InvalidArgument, match=r"privacy\.clip_norm"):
        EdgeAgent(settings)


PSEUDONYM_KEY = "11" * 32
PSEUDONYMS = Pseudonymiser.from_text(PSEUDONYM_KEY)


async def test_gateway_stores_pseudonyms_for_a_device_session(
    bundle_dir: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir, privacy={"pseudonym_key": PSEUDONYM_KEY}) as gw:
        settings = EdgeSettings(
            **nest({"bundle": bundle_dir, "tls.insecure": True, "gateway": gw.address,
                    "device_id": "cam-7", "cache.entries": 0, "telemetry.interval_s": 0.05,
                    "routing.sla_ms": 3000})
        )  # fmt: skip
        async with EdgeAgent(settings) as agent:
            assert await agent.wait_connected(5)
            # A hostile (or careless) app puts personal data in what the gateway records.
            await agent.infer(images(1)[0], idempotency_key="order of bob@example.com")
            await asyncio.sleep(0.3)
        assert gw.records and gw.telemetry
        assert {r.device_id for r in gw.records} <= {
            PSEUDONYMS.device("cam-7"),
            PSEUDONYMS.device("edge-dev"),
        }
        assert all(is_pseudonym(e.device_id) for e in gw.telemetry)
        assert "cam-7" not in repr(gw.records) + repr(gw.telemetry)
        assert "bob@example.com" not in repr(gw.records) + repr(gw.telemetry)
        # The key is an id the app chose: stored as its keyed pseudonym, never as text.
        idk = PSEUDONYMS.idempotency("order of bob@example.com")
        assert any(r.idempotency_key == idk for r in gw.records)
        # No identifier travels with the features: the device id is only in the session's Hello.
        assert gw.frames.headers
        assert all(b"cam-7" not in h.SerializeToString() for h in gw.frames.headers)
        assert [h.device_id for h in gw.frames.hellos] == ["cam-7"]


async def test_a_gateway_with_both_keys_keeps_sealed_pseudonymous_rows(
    bundle_dir: Path, gateway_models_dir: Path, tmp_path: Path
) -> None:
    """The composition end to end: a real edge agent's requests through a real gateway built
    from settings with privacy.required, into a real SQLite metadata file — no raw id, no
    client text, no answer in the clear; every row opens under the ring."""
    import sqlite3

    from cloud.app import Gateway
    from cloud.stores import build_stores
    from cloud.stores._sealed_rows import RowSealer
    from common.privacy import KeyRing
    from tests.support.gateway import GatedBackend, gateway_settings

    ring_file, key_file, db = tmp_path / "ring.json", tmp_path / "pseudonym.key", tmp_path / "m.db"
    KeyRing.generate("k1").save(ring_file)
    key_file.write_text(PSEUDONYM_KEY)
    key_file.chmod(0o600)
    settings = gateway_settings(
        gateway_models_dir,
        privacy={"required": True, "pseudonym_key_file": key_file, "at_rest_key_file": ring_file},
        stores={"metadata_url": f"sqlite:///{db}", "metadata_flush_interval_s": 0.05},
    )
    stores = build_stores(settings.stores, keyring=settings.privacy.keyring())
    gw = Gateway(settings, GatedBackend(), stores=stores)
    await gw.start()
    try:
        edge = _settings(bundle_dir, gw.port, device_id="cam-9")
        async with EdgeAgent(edge) as agent:
            assert await agent.wait_connected(5)
            for i, image in enumerate(images(3)):
                result = await agent.infer(image, idempotency_key=f"invoice {i} of Jane Roe")
                assert result.route is Route.CLOUD
            await asyncio.sleep(0.3)
    finally:
        await gw.stop()
    with sqlite3.connect(db) as conn:
        dump = "\n".join(
            str(conn.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("devices", "sessions", "requests", "results", "costs")
        )
        requests = conn.execute("SELECT device_id, request_id, sealed FROM requests").fetchall()
        results = conn.execute(
            "SELECT device_id, request_id, top_class, sealed FROM results"
        ).fetchall()
    assert "cam-9" not in dump and "Jane Roe" not in dump and "invoice" not in dump
    assert requests and results
    sealer = RowSealer(KeyRing.load(ring_file))
    keys = set()
    for device, request, sealed in requests:
        assert is_pseudonym(device) and is_pseudonym(request)
        keys.add(sealer.open("requests", (device, request), sealed, {})["idempotency_key"])
    assert {PSEUDONYMS.idempotency(f"invoice {i} of Jane Roe") for i in range(3)} <= keys
    for device, request, top, sealed in results:
        assert top is None
        assert isinstance(sealer.open("results", (device, request), sealed, {})["top_class"], int)
