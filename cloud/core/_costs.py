"""Cost accounting and budgets: what each request cost, per organisation and model.

A request is billed its share of the batch it ran in (batch compute time × its rows / the batch's
rows) on the processor the backend runs on, plus the bytes of its answer (egress), priced from a
:class:`Prices` table. Costs add up per organisation (a device's org comes from
:class:`OrgDirectory`: a configured map, or a resolver a tenancy layer installs) into counters,
and into the org's spend of the current budget period; :meth:`CostAccountant.exhausted` says
whether an org has spent its :class:`Budget`, so a policy can stop offloading for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cloud._metrics import GatewayMetrics
from cloud.core._types import InferenceRequest, InferenceResult

DEFAULT_ORG = "default"
"""The organisation of devices the directory does not know."""


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices in one currency (the table's; USD by convention)."""

    per_cpu_ms: float = 0.0
    """Per millisecond of backend compute on CPU."""
    per_gpu_ms: float = 0.0
    """Per millisecond of backend compute on GPU."""
    per_egress_gb: float = 0.0
    """Per 10^9 bytes of answers sent back."""

    def cost(self, compute_ms: float, processor: str, egress_bytes: int) -> float:
        """Cost of one request."""
        per_ms = self.per_gpu_ms if processor == "gpu" else self.per_cpu_ms
        return compute_ms * per_ms + egress_bytes / 1e9 * self.per_egress_gb


@dataclass(frozen=True, slots=True)
class Budget:
    """What an organisation may spend per period (seconds; periods start at multiples of it
    since the epoch, e.g. 86400: UTC days)."""

    amount: float
    period_s: float = 86400.0


@dataclass(slots=True)
class OrgDirectory:
    """Device → organisation: ``resolver`` (the authenticator's: the org the device's certificate
    names, the one its data is kept under), else a configured map (devices without a
    certificate: plaintext development), else :data:`DEFAULT_ORG`. Organisations are label
    values, so only configured ones (``orgs``, the map's) are used; any other is ``_other``."""

    devices: Mapping[str, str] = field(default_factory=dict)
    orgs: frozenset[str] = frozenset()
    resolver: Callable[[str], str] | None = None

    def org_of(self, device_id: str) -> str:
        org = self.resolver(device_id) if self.resolver is not None else ""
        if not org:
            org = self.devices.get(device_id, "")
        if not org:
            return DEFAULT_ORG
        known = self.orgs | set(self.devices.values()) | {DEFAULT_ORG}
        return org if org in known else "_other"


@dataclass(slots=True)
class _Spend:
    period: int = -1
    spent: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestCost:
    """What one request was billed."""

    org: str
    compute_ms: float
    egress_bytes: int
    cost: float


class CostAccountant:
    """Prices finished requests and tracks each org's spend against its budget (a data-plane
    request observer: :meth:`on_request`)."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        prices: Prices,
        processor: str = "cpu",
        directory: OrgDirectory | None = None,
        budgets: Mapping[str, Budget] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._m = metrics
        self.prices = prices
        self.processor = processor
        self.directory = directory or OrgDirectory()
        self.budgets = dict(budgets or {})
        self._clock = clock
        self._spend: dict[str, _Spend] = {}
        for org, b in self.budgets.items():
            metrics.budget.labels(org).set(b.amount)
            metrics.budget_spent.labels(org).set(0.0)

    def price(self, request: InferenceRequest, result: InferenceResult) -> RequestCost:
        """The cost of a computed request (a cached answer costs only its egress)."""
        egress = sum(int(a.nbytes) for a in result.outputs.values())
        compute_ms = 0.0
        if not result.cached and result.batch_size > 0:
            rows = _rows(request) or 1
            compute_ms = result.compute_s * 1000.0 * min(1.0, rows / result.batch_size)
        org = self.directory.org_of(request.device_id)
        return RequestCost(
            org, compute_ms, egress, self.prices.cost(compute_ms, self.processor, egress)
        )

    def on_request(
        self, request: InferenceRequest, status: str, result: InferenceResult | None
    ) -> None:
        """Bill a finished request (only answered ones cost anything)."""
        if result is None:
            return
        c = self.price(request, result)
        m = self._m
        model = request.model_name
        if c.compute_ms:
            m.child(m.compute_billed, c.org, model, self.processor).inc(c.compute_ms / 1000.0)
        if c.egress_bytes:
            m.child(m.egress_bytes, c.org, model).inc(c.egress_bytes)
        if c.cost:
            m.child(m.cost, c.org, model, request.region).inc(c.cost)
            self._add(c.org, c.cost)

    def _add(self, org: str, cost: float) -> None:
        budget = self.budgets.get(org)
        if budget is None:
            return
        s = self._current(org, budget)
        s.spent += cost
        self._m.budget_spent.labels(org).set(s.spent)

    def _current(self, org: str, budget: Budget) -> _Spend:
        period = int(self._clock() // budget.period_s)
        s = self._spend.setdefault(org, _Spend())
        if s.period != period:
            s.period, s.spent = period, 0.0
        return s

    def set_budget(self, org: str, amount: float) -> Budget:
        """Give ``org`` a budget of ``amount`` per period from now on (an existing budget keeps
        its period and what was spent in it, so changing the amount never forgives a spend; a
        new one gets a UTC day and counts spend from now). The org becomes a known ``org``
        label value (callers bound who may add one: the console lets an Admin set only their
        own org's)."""
        old = self.budgets.get(org)
        budget = Budget(amount, old.period_s if old is not None else 86400.0)
        self.budgets[org] = budget
        self.directory.orgs = self.directory.orgs | {org}
        self._m.budget.labels(org).set(amount)
        self._m.budget_spent.labels(org).set(self._current(org, budget).spent)
        return budget

    def spent(self, org: str) -> float:
        """What ``org`` has spent in the current period (0 without a budget)."""
        budget = self.budgets.get(org)
        return 0.0 if budget is None else self._current(org, budget).spent

    def exhausted(self, device_id: str) -> bool:
        """True when the org of ``device_id`` has spent its budget for this period."""
        org = self.directory.org_of(device_id)
        budget = self.budgets.get(org)
        return budget is not None and self._current(org, budget).spent >= budget.amount


def _rows(request: InferenceRequest) -> int:
    for a in request.inputs.values():
        return int(a.shape[0]) if a.ndim else 1
    return 0


__all__ = [
    "DEFAULT_ORG",
    "Budget",
    "CostAccountant",
    "OrgDirectory",
    "Prices",
    "RequestCost",
]
