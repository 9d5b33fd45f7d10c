"""Debian's Prometheus server scrapes a real ``aiml021 serve`` process with our rules loaded:
every rule evaluates without error against real series, an induced SLA breach (fmnist_branchy
held to a 0.1 ms target by the test-only rules file) fires the SLA alert for that model only,
and every dashboard query is valid PromQL that Prometheus accepts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc

from deploy.grafana import OUT_DIR, queries
from tests.integration.observability._prometheus import (
    Prometheus,
    ServeProcess,
    fast_rules,
    run_prometheus,
    run_serve,
)

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "rules"
OVERRIDE = ROOT / "deploy" / "prometheus" / "tests" / "sla-override.rules.yml"
BREACHED = "fmnist_branchy"  # the model the override holds to 0.1 ms


class Traffic:
    """ModelInfer calls with fresh random inputs (never cache hits), on a thread, until stopped."""

    def __init__(self, port: int, model: str) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = kgrpc.GRPCInferenceServiceStub(self._channel)
        self._model = model
        self._stop = threading.Event()
        self.sent = 0
        self.errors: list[grpc.RpcError] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            req = kpb.ModelInferRequest(model_name=self._model, id=f"r{self.sent}")
            req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
            req.raw_input_contents.append(rng.random((1, 1, 28, 28), np.float32).tobytes())
            try:
                self._stub.ModelInfer(req, timeout=10)
            except grpc.RpcError as e:
                self.errors.append(e)
            self.sent += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._channel.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServeProcess, Prometheus]]:
    rules = [
        RULES / "aiml021-sla.rules.yml",
        fast_rules(RULES / "aiml021-gateway.rules.yml", tmp_path / "gateway.rules.yml"),
        OVERRIDE,
    ]
    with run_serve(ROOT / "models", tmp_path) as gw:
        prom_dir = tmp_path / "prom"
        prom_dir.mkdir()
        with run_prometheus(prom_dir, [f"127.0.0.1:{gw.metrics_port}"], rules) as prom:
            yield gw, prom


def _wait(
    what: str, stack: tuple[ServeProcess, Prometheus], check: Any, timeout_s: float = 45.0
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            logs = [f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (s.log for s in stack)]
            raise AssertionError(f"{what} not seen in {timeout_s}s\n" + "\n".join(logs))
        time.sleep(0.5)


def _firing(prom: Prometheus, name: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.api("alerts")["alerts"]
        if a["labels"]["alertname"] == name and a["state"] == "firing"
    ]


def _evaluated_rules(prom: Prometheus) -> list[dict[str, Any]]:
    """Every loaded rule once each has been evaluated at least once, else []."""
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    return rules if all(r["health"] != "unknown" for r in rules) else []


@pytest.mark.timeout(120)
def test_induced_sla_breach_fires_the_alert_in_a_real_prometheus(
    stack: tuple[ServeProcess, Prometheus],
) -> None:
    gw, prom = stack
    started = time.monotonic()
    with Traffic(gw.port, BREACHED) as traffic:
        firing = _wait(
            "Aiml021GatewayLatencySLABreach firing",
            stack,
            lambda: _firing(prom, "Aiml021GatewayLatencySLABreach"),
        )
        assert [a["labels"]["model"] for a in firing] == [BREACHED]
        assert firing[0]["labels"]["severity"] == "page"
        assert "over its target" in firing[0]["annotations"]["summary"]
        # It fired because the measured p95 is over the overridden target, not by accident.
        sel = f'{{model="{BREACHED}"}}'
        (target,) = prom.api(
            "query", query=f"model:aiml021_sla_p95_latency_target_seconds:effective{sel}"
        )["result"]
        (p95,) = prom.api(
            "query", query=f"model:aiml021_gateway_queue_compute_seconds:p95_5m{sel}"
        )["result"]
        assert float(target["value"][1]) == 0.0001 < float(p95["value"][1])
        # The measured per-request p95 breaches it too (no region declared: "unspecified").
        per_request = _wait(
            "Aiml021RequestLatencySLABreach firing",
            stack,
            lambda: _firing(prom, "Aiml021RequestLatencySLABreach"),
        )
        assert [(a["labels"]["model"], a["labels"]["region"]) for a in per_request] == [
            (BREACHED, "unspecified")
        ]
        # Every rule has been evaluated against the real series and none failed.
        rules = _wait("every rule evaluated", stack, lambda: _evaluated_rules(prom))
        assert len(rules) == 48  # 2 targets + 45 gateway rules + the test override
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
        targets = prom.api("targets")["activeTargets"]
        assert [(t["labels"]["job"], t["health"]) for t in targets] == [("aiml021-gateway", "up")]
    assert traffic.sent > 0 and not traffic.errors
    assert time.monotonic() - started < 60


def _concrete(expr: str) -> str:
    """A dashboard query as Grafana sends it with every variable at All."""
    for var, value in (("$__rate_interval", "1m"), ("$model", ".*"), ("$route", ".*"),
                       ("$device_class", ".*"), ("$region", ".*"), ("$org", ".*")):  # fmt: skip
        expr = expr.replace(var, value)
    return expr


@pytest.mark.timeout(120)
def test_dashboard_queries_are_valid_promql_with_data_for_the_gateway_panels(
    stack: tuple[ServeProcess, Prometheus],
) -> None:
    gw, prom = stack
    with Traffic(gw.port, BREACHED):
        _wait(
            "a request rate",  # two scrapes with traffic between them
            stack,
            lambda: prom.api("query", query="rate(aiml021_gateway_batch_size_count[1m]) > 0")[
                "result"
            ],
        )
    empty = []
    for path in sorted(OUT_DIR.glob("*.json")):
        for where, expr in queries(json.loads(path.read_text())):
            if expr.startswith("label_values("):
                continue  # Grafana's own function, not PromQL
            data = prom.api("query", query=_concrete(expr))
            if not data["result"]:
                empty.append(f"{path.stem}: {where}")
    # Requests and batches happened: the gateway dashboard's traffic panels have data.
    assert "aiml021-gateway: panel 'Requests by model and status' A" not in empty
    assert "aiml021-gateway: panel 'Batches / s' A" not in empty
    assert "aiml021-fleet: panel 'Requests / s by region' A" not in empty
