"""The gateway's observability parts without a server: region labels, request durations, device
replay backlog, worker-restart counting, certificate expiry, cost accounting and budgets, and the
JSON log configuration."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud._metrics import OTHER, UNSPECIFIED_REGION, GatewayMetrics
from cloud._observability import CertificateExpiry
from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    Backend,
    DataPlane,
    InferenceRequest,
    InferenceResult,
    ModelKey,
    ModelRepository,
    ModelSpec,
    TensorSpec,
)
from cloud.core._costs import Budget, CostAccountant, OrgDirectory, Prices
from cloud.core._fleet import DeviceFleet, DeviceReport
from common.privacy import Pseudonymiser, configure
from common.telemetry import configure_logging, device_pseudonym
from policy import Action

SPEC = ModelSpec(
    "m", "1", Path("m.onnx"), (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)), TensorSpec("z", "float32", (-1, 1))), 8,
)  # fmt: skip


class _Backend(Backend):
    async def load(self, model: ModelSpec) -> None: ...

    async def unload(self, key: ModelKey) -> None: ...

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        return {"y": x * 2, "z": x.sum(axis=1, keepdims=True)}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


def _value(m: GatewayMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_region_labels_come_only_from_the_configured_set() -> None:
    m = GatewayMetrics()
    assert m.region("anything") == OTHER and m.region("") == UNSPECIFIED_REGION
    m.set_regions({"eu-west", "ap-south"}, home="us-east")
    assert [m.region(r) for r in ("eu-west", "ap-south", "", "x" * 10_000, "mars")] == [
        "eu-west", "ap-south", "us-east", OTHER, OTHER,
    ]  # fmt: skip


async def test_every_finished_request_is_timed_by_model_api_region_and_device_class() -> None:
    m = GatewayMetrics()
    m.set_regions({"eu-west"})
    dp = DataPlane(ModelRepository([SPEC]), _Backend(), DynamicBatching(BatcherConfig()), m)
    await dp.start()
    seen: list[str] = []
    dp.observers.append(lambda r, status, res: seen.append(status))

    def broken(*_: object) -> None:
        raise RuntimeError("a broken observer harms nothing")

    dp.observers.insert(0, broken)
    for region in ("eu-west", "atlantis"):
        req = InferenceRequest("m", "", {"x": np.ones((1, 4), np.float32)}, region=region)
        result = await dp.infer(req)
        dp.record(req, "OK", result)
    dp.record(InferenceRequest("m", "", {}, api="session", device_class="phone"), "CANCELLED")
    dp.record(InferenceRequest("m", "", {}, api="session", device_class="x" * 65), "CANCELLED")
    assert seen == ["OK", "OK", "CANCELLED", "CANCELLED"]
    name = "aiml021_gateway_request_duration_seconds_count"
    labels = {"model": "m", "device_class": ""}
    assert _value(m, name, **labels, api="infer", region="eu-west") == 1
    assert _value(m, name, **labels, api="infer", region=OTHER) == 1
    # the device's class labels the histogram too, bounded like every device-filled label
    at_home = {"model": "m", "api": "session", "region": UNSPECIFIED_REGION}
    assert _value(m, name, **at_home, device_class="phone") == 1
    assert _value(m, name, **at_home, device_class=OTHER) == 1
    await dp.close()


async def test_upkeep_counts_worker_restarts_once_and_anew_after_a_reload() -> None:
    m = GatewayMetrics()
    dp = DataPlane(ModelRepository([SPEC]), _Backend(), DynamicBatching(BatcherConfig()), m)
    await dp.start()
    batcher = dp.batcher(SPEC.key)
    batcher.restarts = 2  # type: ignore[attr-defined]  # what two crashes leave
    dp.upkeep()
    dp.upkeep()
    assert _value(m, "aiml021_gateway_batch_worker_restarts_total", model="m") == 2
    await dp.unload(SPEC.key)
    await dp.reload("m")
    dp.batcher(SPEC.key).restarts = 1  # type: ignore[attr-defined]
    dp.upkeep()
    assert _value(m, "aiml021_gateway_batch_worker_restarts_total", model="m") == 3
    await dp.close()


def test_replay_backlog_sums_each_devices_latest_report_and_forgets_silent_ones() -> None:
    m = GatewayMetrics()
    m.set_regions({"eu"})
    fleet = DeviceFleet(m, stale_s=60, max_devices=3)
    fleet.report(DeviceReport("a", "eu", "cam", 5), now=0)
    fleet.report(DeviceReport("b", "eu", "cam", 7), now=1)
    fleet.report(DeviceReport("a", "eu", "cam", 2), now=2)  # replaces a's 5
    backlog = "aiml021_gateway_device_replay_backlog_requests"
    assert _value(m, backlog, region="eu", device_class="cam") == 9
    assert _value(m, "aiml021_gateway_reporting_devices", region="eu", device_class="cam") == 2
    fleet.report(DeviceReport("c", "nowhere", "cam", 1), now=3)
    assert _value(m, backlog, region=OTHER, device_class="cam") == 1
    fleet.report(DeviceReport("d", "eu", "cam", 100), now=4)  # over max_devices: b goes
    assert _value(m, backlog, region="eu", device_class="cam") == 102
    fleet.expire(now=63.5)  # a (heard at 2) and c (3) are silent for 60 s; d is not
    assert _value(m, backlog, region="eu", device_class="cam") == 100
    assert fleet.backlog() == 100


def _cert(path: Path, days: int) -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.not_valid_after_utc.timestamp()


def test_certificate_expiry_follows_a_rotated_file_and_is_nan_when_unreadable(
    tmp_path: Path,
) -> None:
    pem = tmp_path / "server.pem"
    watch = CertificateExpiry(pem)
    assert np.isnan(watch())
    first = _cert(pem, 30)
    assert watch() == first
    second = _cert(pem, 90)
    assert watch() == second and second > first
    pem.write_text("not a certificate")
    assert np.isnan(watch())


def _result(compute_s: float, batch: int, cached: bool = False) -> InferenceResult:
    out = {"y": np.zeros((1, 250), np.float32)}  # 1000 bytes of answer
    return InferenceResult("m", "1", out, cached=cached, compute_s=compute_s, batch_size=batch)


def test_a_request_is_billed_its_share_of_the_batch_and_its_egress() -> None:
    m = GatewayMetrics()
    m.add_model("m")
    acct = CostAccountant(
        m,
        Prices(per_cpu_ms=0.01, per_gpu_ms=1.0, per_egress_gb=1e6),
        "cpu",
        OrgDirectory(devices={"cam-1": "acme"}),
    )
    req = InferenceRequest("m", "1", {"x": np.zeros((2, 4), np.float32)}, device_id="cam-1")
    c = acct.price(req, _result(compute_s=0.008, batch=8))
    assert c.org == "acme" and c.compute_ms == pytest.approx(2.0)  # 2 rows of 8: a quarter
    assert c.egress_bytes == 1000 and c.cost == pytest.approx(2.0 * 0.01 + 1000 / 1e9 * 1e6)
    acct.on_request(req, "OK", _result(0.008, 8))
    assert _value(m, "aiml021_gateway_billed_compute_seconds_total",
                  org="acme", model="m", processor="cpu") == pytest.approx(0.002)  # fmt: skip
    assert _value(m, "aiml021_gateway_egress_bytes_total", org="acme", model="m") == 1000
    assert _value(
        m, "aiml021_gateway_cost_total", org="acme", model="m", region=UNSPECIFIED_REGION
    ) == pytest.approx(1.02)
    cached = acct.price(req, _result(0.008, 8, cached=True))
    assert cached.compute_ms == 0 and cached.egress_bytes == 1000
    acct.on_request(req, "RESOURCE_EXHAUSTED", None)  # refused: costs nothing
    assert _value(m, "aiml021_gateway_egress_bytes_total", org="acme", model="m") == 1000


def test_unknown_devices_are_default_and_unknown_orgs_never_become_labels() -> None:
    certified = {"g1": "globex", "evil": "attacker-chosen"}  # what certificates named
    d = OrgDirectory(
        devices={"a": "acme"}, orgs=frozenset({"globex"}), resolver=lambda x: certified.get(x, "")
    )
    assert d.org_of("a") == "acme" and d.org_of("g1") == "globex"
    assert d.org_of("") == "default" and d.org_of("evil") == OTHER


def test_a_budget_is_spent_within_its_period_and_renews_with_the_next() -> None:
    m = GatewayMetrics()
    m.add_model("m")
    now = [86400.0 * 10 + 5]
    acct = CostAccountant(
        m,
        Prices(per_cpu_ms=1.0),
        directory=OrgDirectory(devices={"cam": "acme", "other": "globex"}),
        budgets={"acme": Budget(amount=3.0, period_s=86400)},
        clock=lambda: now[0],
    )
    assert _value(m, "aiml021_gateway_budget", org="acme") == 3.0
    req = InferenceRequest("m", "1", {"x": np.zeros((1, 4), np.float32)}, device_id="cam")
    for _ in range(2):
        acct.on_request(req, "OK", _result(0.001, 1))  # 1 ms: cost 1
    assert not acct.exhausted("cam") and acct.spent("acme") == pytest.approx(2.0)
    acct.on_request(req, "OK", _result(0.001, 1))
    assert acct.exhausted("cam") and _value(m, "aiml021_gateway_budget_spent", org="acme") == 3
    assert not acct.exhausted("other")  # globex has no budget
    now[0] += 86400
    assert not acct.exhausted("cam") and acct.spent("acme") == 0


def test_json_log_lines_carry_request_fields_and_a_pseudonymous_device() -> None:
    out = io.StringIO()
    handler = configure_logging("json", stream=out, access=True)
    try:
        configure(Pseudonymiser(b"k" * 32))
        device = device_pseudonym("cam-17")
        assert device.startswith("dev_") and device == Pseudonymiser(b"k" * 32).device("cam-17")
        logging.getLogger("aiml021.access").info(
            "done", extra={"request_id": "r1", "device": device, "status": "OK", "secret": "x"}
        )
        logging.getLogger("some.module").warning("plain %s", "text")
    finally:
        configure(None)
        logging.getLogger().removeHandler(handler)
        logging.getLogger("aiml021.access").setLevel(logging.NOTSET)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["request_id"] == "r1" and first["status"] == "OK" and "secret" not in first
    assert first["logger"] == "aiml021.access" and first["level"] == "info"
    assert second["message"] == "plain text" and "request_id" not in second
    assert device_pseudonym("cam-17") != device  # without the key: a per-process pseudonym


def test_an_unknown_log_format_in_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIML021_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="AIML021_LOG_FORMAT"):
        configure_logging()


def test_policy_outcomes_are_counted_under_the_policy_that_decided() -> None:
    """A/B on the dashboards: each reported outcome counts under its decision's policy (two
    arms learning side by side), with accuracy, latency, missed deadlines and cost."""
    from cloud._observability import policy_outcome_metrics
    from policy import (
        DecisionContext,
        HeuristicPolicy,
        OnlineLearner,
        ReportedOutcome,
        synthetic_profile,
    )

    m = GatewayMetrics()
    arm_a = HeuristicPolicy(synthetic_profile())
    arm_a.policy_id = "arm-a"
    arm_b = HeuristicPolicy(synthetic_profile())
    arm_b.policy_id = "arm-b"
    learner = OnlineLearner(
        arm_a, route=lambda ctx: arm_b if ctx.device_id.startswith("b") else None
    )
    learner.observers.append(policy_outcome_metrics(m))
    ctx = DecisionContext(deadline_ms=100.0)
    for device, correct, latency in (("a1", True, 20.0), ("a2", False, 250.0), ("b1", True, 40.0)):
        decision_id, decision = learner.decide(dataclasses.replace(ctx, device_id=device))
        assert learner.report(ReportedOutcome(decision_id, correct, latency, cloud_cost=0.5))
        action = decision.action.value
        assert (_value(m, "aiml021_policy_outcomes_total", policy=decision.policy_id,
                       action=action, result="correct" if correct else "wrong") or 0) >= 1  # fmt: skip
    total = {
        p: sum(
            _value(m, "aiml021_policy_outcomes_total", policy=p, action=a.value, result=r) or 0
            for a in Action
            for r in ("correct", "wrong")
        )
        for p in ("arm-a", "arm-b")
    }
    assert total == {"arm-a": 2, "arm-b": 1}
    assert _value(m, "aiml021_policy_deadline_missed_total", policy="arm-a") == 1
    assert _value(m, "aiml021_policy_deadline_missed_total", policy="arm-b") is None
    assert _value(m, "aiml021_policy_outcome_latency_seconds_count", policy="arm-a") == 2
    assert _value(m, "aiml021_policy_outcome_latency_seconds_sum", policy="arm-b") == 0.04
    assert _value(m, "aiml021_policy_cloud_cost_total", policy="arm-a") == 1.0
    # an unknown decision is not counted (nothing was learned from it)
    assert not learner.report(ReportedOutcome("nope", True, 1.0))
    assert total["arm-a"] == 2
