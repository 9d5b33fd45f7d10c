"""What the operator console needs beyond the rest of the REST API: a read-only summary of the
gateway's own counters, a bounded policy simulation, and the built console's static files.

The console (``console/``, a React app) talks to the gateway only through the public REST API;
these two routes are part of it (documented in ``/openapi.json``, in the authorization table).
The summary reads the gateway's Prometheus registry (the same numbers ``/metrics`` exports), so it
never names anything a caller chose; cost and budget rows are the caller's organisation only.
The simulation replays a synthetic trace of the policy package's simulator (``policy.Simulator``)
in a worker thread, one at a time per gateway process, with a bounded number of requests.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from cloud.core import current_principal
from common.errors import InvalidArgument, ResourceExhausted

CONSOLE_DIST = Path(__file__).resolve().parents[2] / "console" / "dist"
"""Where ``cd console && npm run build`` writes the console (served at ``/console/``)."""
MAX_SIM_REQUESTS = 5000
SIM_POLICIES = ("static", "heuristic", "linucb", "thompson", "dqn")
_SERIES_POINTS = 50


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _sum(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in samples if all(labels.get(k) == w for k, w in match.items()))


def _by(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in samples:
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out


def summary(
    registry: CollectorRegistry,
    deadline_ms: float,
    visible: Callable[[str], bool] = lambda model: True,
) -> dict[str, Any]:
    """The console's overview numbers from the gateway's metrics registry; per-model rows only
    for the models ``visible`` says the caller may see (``cloud.core.ModelRepository.visible``)."""
    s = _samples(registry)
    requests = s.get("aiml021_gateway_requests_total", [])
    total = sum(v for _, v in requests)
    ok = _sum(requests, status="OK")
    cache = s.get("aiml021_gateway_result_cache_total", [])
    hits, misses = _sum(cache, result="hit"), _sum(cache, result="miss")
    routes = _by(s.get("aiml021_gateway_telemetry_events_total", []), "route")
    # Gateway time against the deadline, and the heatmap of it by region (histogram buckets).
    buckets = s.get("aiml021_gateway_request_duration_seconds_bucket", [])
    counts = s.get("aiml021_gateway_request_duration_seconds_count", [])
    edges = sorted({float(b["le"]) for b, _ in buckets if b.get("le") not in (None, "+Inf")})
    within_edge = max((e for e in edges if e <= deadline_ms / 1000.0), default=None)
    finished = sum(v for _, v in counts)
    within = _sum(buckets, le=str(within_edge)) if within_edge is not None else 0.0
    cells = sorted({(b.get("region", ""), b.get("device_class", "")) for b, _ in buckets})
    heatmap = []
    for region, device_class in cells:
        where = {"region": region, "device_class": device_class}
        cumulative = [_sum(buckets, **where, le=str(e)) for e in edges]
        cumulative.append(_sum(buckets, **where, le="+Inf"))
        heatmap.append(
            {
                **where,
                "counts": [c - p for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)],
            }
        )
    org = current_principal().org
    cost_rows = s.get("aiml021_gateway_cost_total", [])
    mine = [(labels, v) for labels, v in cost_rows if labels.get("org") == org]
    cost = sum(v for _, v in mine)
    org_requests = total  # requests are not labelled by org: cost per 1,000 of this gateway's
    budget = {labels["org"]: v for labels, v in s.get("aiml021_gateway_budget", [])}
    spent = {labels["org"]: v for labels, v in s.get("aiml021_gateway_budget_spent", [])}
    drift = [
        {"model": labels.get("model", ""), "signal": labels.get("signal", ""), "psi": v}
        for labels, v in s.get("aiml021_gateway_drift_psi", [])
        if visible(labels.get("model", ""))
    ]
    # Expected accuracy: the mean calibrated confidence of what devices answered (as the daily
    # report computes it; a calibrated confidence is the probability the answer is right).
    conf_sum = _by(s.get("aiml021_gateway_device_answer_confidence_sum", []), "route")
    conf_n = _by(s.get("aiml021_gateway_device_answer_confidence_count", []), "route")
    answers = sum(conf_n.values())
    return {
        "requests": {
            "total": total,
            "ok": ok,
            "by_model": {m: v for m, v in _by(requests, "model").items() if visible(m)},
        },
        "cache": {"hits": hits, "misses": misses},
        "device_routes": routes,
        "sla": {
            "deadline_ms": deadline_ms,
            "bucket_ms": within_edge * 1000.0 if within_edge is not None else None,
            "finished": finished,
            "within": within,
        },
        "latency_heatmap": {
            "bucket_upper_ms": [e * 1000.0 for e in edges] + [None],
            "regions": heatmap,
        },
        "cost": {
            "org": org,
            "total": cost,
            "per_1000": cost / org_requests * 1000.0 if org_requests else 0.0,
            "budget": budget.get(org),
            "budget_spent": spent.get(org),
        },
        "drift": drift,
        "accuracy": {
            "answers": answers,
            "expected": sum(conf_sum.values()) / answers if answers else None,
            "by_route": {r: conf_sum.get(r, 0.0) / n for r, n in sorted(conf_n.items()) if n},
        },
    }


def _simulate(policy_kind: str, scenario: str, requests: int, seed: int, deadline_ms: float) -> Any:
    from policy import SCENARIOS, SimConfig, Simulator, make_policy, synthetic_trace

    trace = synthetic_trace(n=max(requests, 200), seed=seed)
    sim = Simulator(trace, SCENARIOS[scenario], SimConfig(deadline_ms=deadline_ms))
    env = sim.environment(seed, requests)
    out = []
    for kind in dict.fromkeys(("static", policy_kind)):  # the static baseline first
        result = sim.run(make_policy(kind, trace.profile), env)
        window = max(1, requests // _SERIES_POINTS)
        series = []
        for start in range(0, requests, window):
            part = slice(start, start + window)
            series.append(
                {
                    "request": start + window,
                    "latency_ms": float(result.latency_ms[part].mean()),
                    "accuracy": float(result.correct[part].mean()),
                    "offload_rate": float(result.offloaded[part].mean()),
                }
            )
        summary_ = {k: v for k, v in result.summary(deadline_ms).items() if math.isfinite(v)}
        out.append({"policy": kind, "summary": summary_, "series": series})
    return {"scenario": scenario, "requests": requests, "seed": seed, "runs": out}


class ConsoleRoutes:
    """``GET /v1/console/summary`` and ``POST /v1/console/simulate``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        body: Any,
        visible: Callable[[str], bool] = lambda model: True,
    ) -> None:
        self._registry = registry
        self._visible = visible
        self._body = body
        self._simulating = asyncio.Lock()

    async def summary(self, request: Request) -> Response:
        raw = request.query_params.get("deadline_ms", "100")
        try:
            deadline = float(raw)
        except ValueError:
            deadline = -1.0
        if not 0.0 < deadline <= 60_000.0:
            raise InvalidArgument("deadline_ms must be a number in (0, 60000]")
        return JSONResponse(summary(self._registry, deadline, self._visible))

    async def simulate(self, request: Request) -> Response:
        from policy import SCENARIOS

        body = await self._body(request)
        try:
            doc = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument("body must be a JSON object")
        unknown = set(doc) - {"policy", "scenario", "requests", "seed", "deadline_ms"}
        if unknown:
            raise InvalidArgument(f"unknown fields: {', '.join(sorted(unknown))}")
        kind, scenario = doc.get("policy", "heuristic"), doc.get("scenario", "steady")
        requests, seed = doc.get("requests", 1000), doc.get("seed", 0)
        deadline = doc.get("deadline_ms", 100.0)
        if kind not in SIM_POLICIES:
            raise InvalidArgument(f"policy must be one of {', '.join(SIM_POLICIES)}")
        if not isinstance(scenario, str) or scenario not in SCENARIOS:
            raise InvalidArgument(f"scenario must be one of {', '.join(sorted(SCENARIOS))}")
        if type(requests) is not int or not 100 <= requests <= MAX_SIM_REQUESTS:
            raise InvalidArgument(f"requests must be an integer in [100, {MAX_SIM_REQUESTS}]")
        if type(seed) is not int or not 0 <= seed < 2**32:
            raise InvalidArgument("seed must be an integer in [0, 2^32)")
        if type(deadline) not in (int, float) or not 1.0 <= deadline <= 10_000.0:
            raise InvalidArgument("deadline_ms must be a number in [1, 10000]")
        if self._simulating.locked():
            raise ResourceExhausted("a policy simulation is already running; try again shortly")
        async with self._simulating:
            result = await asyncio.to_thread(
                _simulate, kind, scenario, requests, seed, float(deadline)
            )
        return JSONResponse(result)


def console_mount(directory: Path = CONSOLE_DIST) -> list[BaseRoute]:
    """The built console at ``/console/`` (nothing when it was not built)."""
    if not (directory / "index.html").is_file():
        return []
    return [Mount("/console", StaticFiles(directory=directory, html=True), name="console")]


_JSON = {"application/json": {"schema": {"type": "object"}}}
_ERR = {
    "description": "client error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        }
    },
}


def console_openapi_paths() -> dict[str, Any]:
    """The two console routes for ``/openapi.json``."""
    sim_body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "policy": {"type": "string", "enum": list(SIM_POLICIES)},
            "scenario": {"type": "string"},
            "requests": {"type": "integer", "minimum": 100, "maximum": MAX_SIM_REQUESTS},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
            "deadline_ms": {"type": "number", "minimum": 1, "maximum": 10000},
        },
    }
    return {
        "/v1/console/summary": {
            "get": {
                "summary": "Overview numbers (requests, cache, device routes, SLA, latency "
                "heatmap by region and device class, cost and budget of the caller's org, drift, "
                "expected accuracy of device answers) from the gateway's metrics",
                "parameters": [
                    {
                        "name": "deadline_ms",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 60000},
                    }
                ],
                "responses": {"200": {"description": "OK", "content": _JSON}, "4XX": _ERR},
            }
        },
        "/v1/console/simulate": {
            "post": {
                "summary": "Replay a synthetic trace through a policy and the static baseline "
                "(policy.Simulator); one at a time per gateway",
                "requestBody": {"content": {"application/json": {"schema": sim_body}}},
                "responses": {"200": {"description": "OK", "content": _JSON}, "4XX": _ERR},
            }
        },
    }


__all__ = ["CONSOLE_DIST", "ConsoleRoutes", "console_mount", "console_openapi_paths"]
