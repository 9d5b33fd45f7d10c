"""The gateway's observability wiring: settings sections ``observability`` and ``accounting``,
and :func:`observe_gateway`, which the composition root calls once to hook drift detection, cost
accounting, tracing and the certificate-expiry gauge onto the data plane and its metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from pydantic import Field

from cloud._drift import DriftMonitor
from cloud._metrics import GatewayMetrics
from cloud.core import DataPlane
from cloud.core._costs import Budget, CostAccountant, OrgDirectory, Prices
from common.settings import Section
from common.telemetry import configure_tracing
from policy import Decision, DecisionContext, Policy, ReportedOutcome

log = logging.getLogger(__name__)


class DriftSettings(Section):
    """Drift detection (PSI and KL divergence against a reference window)."""

    enabled: bool = True
    """Track exit confidences (telemetry) and feature RMS (offloaded requests)."""
    reference_size: int = Field(default=1000, ge=10)
    """Samples of each (model, region, signal) that form its reference window (the first ones
    the gateway sees)."""
    window_size: int = Field(default=1000, ge=10)
    """Most recent samples compared against the reference."""
    bins: int = Field(default=10, ge=2, le=100)
    """Quantile bins of the reference."""
    every: int = Field(default=50, ge=1)
    """Recompute PSI and KL every this many new samples."""


class ObservabilitySettings(Section):
    """Labels, tracing and logs of the gateway (docs/observability.md)."""

    region: str = ""
    """The region this gateway serves: the ``region`` label of requests and devices that name
    none."""
    regions: list[str] = Field(default_factory=list, max_length=256)
    """Regions devices may declare that become label values (any other is ``_other``): a
    hostile device cannot grow the metrics by inventing regions."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector (``host:port``, OTLP/gRPC) that receives the gateway's spans;
    empty: tracing off."""
    otlp_insecure: bool = True
    """Send spans to the collector without TLS (a collector on the same host or network)."""
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded (requests a traced device sends follow its decision)."""
    service_name: str = "aiml021-gateway"
    """``service.name`` of the gateway's spans."""
    drift: DriftSettings = Field(default_factory=DriftSettings)
    """Drift detection."""


class PriceSettings(Section):
    """Prices in one currency (USD by convention)."""

    per_cpu_ms: float = Field(default=0.0, ge=0)
    """Per millisecond of backend compute on CPU (a request's share of its batch)."""
    per_gpu_ms: float = Field(default=0.0, ge=0)
    """Per millisecond of backend compute on GPU."""
    per_egress_gb: float = Field(default=0.0, ge=0)
    """Per 10^9 bytes of answers sent back to devices."""


class BudgetSettings(Section):
    """One organisation's budget."""

    amount: float = Field(default=0.0, ge=0)
    """What the org may spend per period (price-table currency; 0: nothing)."""
    period_s: float = Field(default=86400.0, gt=0)
    """Budget period in seconds (periods start at multiples of it since the epoch: 86400 is a
    UTC day)."""


class AccountingSettings(Section):
    """Cost accounting and budgets per organisation (docs/observability.md)."""

    processor: Literal["cpu", "gpu"] = "cpu"
    """What the backend computes on (which compute price applies)."""
    prices: PriceSettings = Field(default_factory=PriceSettings)
    """The price table."""
    devices: dict[str, str] = Field(default_factory=dict)
    """Device id → organisation for devices whose certificate names none (plaintext
    development); a certificate's organisation wins. Devices in neither belong to ``default``."""
    budgets: dict[str, BudgetSettings] = Field(default_factory=dict)
    """Organisation → budget; alerts fire as it is spent."""
    steer_offload: bool = False
    """When an org has spent its budget, PolicyService decides for its devices with no cloud
    cost allowed (``cost_budget`` 0), and the gateway refuses their session offloads
    (RESOURCE_EXHAUSTED), so devices deciding on their own answer locally too."""


@dataclass
class GatewayObservers:
    """What :func:`observe_gateway` hooked onto the data plane."""

    drift: DriftMonitor | None
    costs: CostAccountant
    tracing: bool = False
    """The gateway installed the process's tracer provider (its stop flushes and removes it)."""


def observe_gateway(
    dataplane: DataPlane,
    metrics: GatewayMetrics,
    obs: ObservabilitySettings,
    accounting: AccountingSettings,
    cert: Path | None,
    org_resolver: Callable[[str], str] | None = None,
) -> GatewayObservers:
    """Hook drift and costs onto ``dataplane``, bound the region label, configure tracing and
    export ``cert``'s expiry (None: plaintext, no certificate)."""
    metrics.set_regions(set(obs.regions), obs.region)
    drift = None
    if obs.drift.enabled:
        d = obs.drift
        drift = DriftMonitor(metrics, d.reference_size, d.window_size, d.bins, d.every)
        dataplane.observers.append(drift.on_request)
        dataplane.telemetry_observers.append(drift.on_telemetry)
    p = accounting.prices
    costs = CostAccountant(
        metrics,
        Prices(p.per_cpu_ms, p.per_gpu_ms, p.per_egress_gb),
        accounting.processor,
        OrgDirectory(
            devices=dict(accounting.devices),
            orgs=frozenset(accounting.budgets),
            resolver=org_resolver,
        ),
        {org: Budget(b.amount, b.period_s) for org, b in accounting.budgets.items()},
    )
    dataplane.observers.append(costs.on_request)
    tracing = False
    if obs.otlp_endpoint:
        tracing = (
            configure_tracing(
                obs.service_name,
                obs.otlp_endpoint,
                sample_ratio=obs.trace_sample_ratio,
                insecure=obs.otlp_insecure,
            )
            is not None
        )
    if cert is not None:
        watch = CertificateExpiry(cert)
        metrics.certificate_expiry.labels("server").set_function(watch)
    return GatewayObservers(drift, costs, tracing)


def policy_outcome_metrics(
    metrics: GatewayMetrics,
) -> Callable[[DecisionContext, Decision, Policy, ReportedOutcome], None]:
    """An :class:`policy.OnlineLearner` observer that counts each reported outcome under the
    policy that decided it: accuracy, latency, missed deadlines and cloud cost per policy, so
    dashboards compare an A/B experiment's arms (and a policy before and after a change)."""
    m = metrics

    def observe(
        ctx: DecisionContext, decision: Decision, policy: Policy, reported: ReportedOutcome
    ) -> None:
        name = decision.policy_id or policy.policy_id
        result = "correct" if reported.correct else "wrong"
        m.child(m.policy_outcomes, name, decision.action.value, result).inc()
        m.child(m.policy_outcome_latency, name).observe(max(reported.latency_ms, 0.0) / 1e3)
        if reported.latency_ms > ctx.deadline_ms:
            m.child(m.policy_deadline_missed, name).inc()
        if reported.cloud_cost > 0:
            m.child(m.policy_cloud_cost, name).inc(reported.cloud_cost)

    return observe


class CertificateExpiry:
    """notAfter of a PEM certificate as epoch seconds, re-read when the file changes (a
    rotated certificate shows at the next scrape); NaN while the file cannot be read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._value = float("nan")

    def __call__(self) -> float:
        try:
            st = os.stat(self.path)
        except OSError:
            return float("nan")
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                cert = x509.load_pem_x509_certificate(self.path.read_bytes())
                self._value = cert.not_valid_after_utc.timestamp()
            except (OSError, ValueError) as exc:
                log.warning("certificate %s unreadable: %s", self.path, exc)
                self._value = float("nan")
        return self._value


__all__ = [
    "AccountingSettings",
    "BudgetSettings",
    "CertificateExpiry",
    "DriftSettings",
    "GatewayObservers",
    "ObservabilitySettings",
    "PriceSettings",
    "observe_gateway",
]
