"""deploy/k8s: every overlay renders with ``kubectl kustomize`` and every object validates —
Kubernetes kinds with kubernetes-validate (strict: unknown fields fail), KEDA's ScaledObject with
its vendored schema — and the pieces fit: the gateway config parses as GatewaySettings, the
autoscaler reads metrics the gateway exports, selectors and ports meet, pods run unprivileged."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cloud._metrics import GatewayMetrics
from cloud._settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "staging", "prod")
KUBERNETES_VERSION = "1.32.0"
SCALEDOBJECT_SCHEMA = json.loads(
    (K8S / "schemas" / "keda.sh_v1alpha1_scaledobject.json").read_text()
)


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with its built-in kustomize) is needed to render deploy/k8s"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def test_every_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, SCALEDOBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_scaledobject_field_fails_validation() -> None:
    docs = render("prod")
    so = one(docs, "ScaledObject", "aiml021-gateway")
    so["spec"]["minReplicas"] = so["spec"].pop("minReplicaCount")  # the HPA's spelling
    with pytest.raises(jsonschema.ValidationError, match="minReplicas"):
        jsonschema.validate(so, SCALEDOBJECT_SCHEMA)
    dep = one(docs, "Deployment", "aiml021-gateway")
    dep["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBERNETES_VERSION, strict=True)


def test_the_gateway_config_is_valid_gateway_settings(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    text = one(docs, "ConfigMap", next(
        d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")
        if d["metadata"]["name"].startswith("aiml021-gateway-config")
    ))["data"]["gateway.toml"]  # fmt: skip
    settings = GatewaySettings.model_validate(tomllib.loads(text))
    dep = one(docs, "Deployment", "aiml021-gateway")
    ports = {
        p["name"]: p["containerPort"]
        for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert ports == {"grpc": settings.server.port, "metrics": settings.metrics.port,
                     "rest": settings.rest.port}  # fmt: skip
    assert settings.server.host == "0.0.0.0" and settings.metrics.host == "0.0.0.0"
    assert not settings.tls.insecure and settings.stores.backend == "redis"
    assert settings.server.workers == 1  # pods scale out, not processes in a pod
    env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"AIML021_GATEWAY_STORES__REDIS_URL", "AIML021_GATEWAY_STORES__METADATA_URL"} <= env
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.drain_grace_s  # the drain finishes before the kubelet kills


def test_autoscaling_reads_metrics_the_gateway_exports(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, docs = rendered
    exported = {m.name for m in GatewayMetrics().registry.collect()}
    exported |= {f"{n}_total" for n in exported}
    hpas, scaled = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "ScaledObject")
    assert len(hpas) + len(scaled) == 1, "exactly one autoscaler owns the gateway Deployment"
    if overlay == "dev":
        assert hpas[0]["spec"]["scaleTargetRef"]["name"] == "aiml021-gateway"
        return
    so = scaled[0]["spec"]
    assert so["scaleTargetRef"]["name"] == "aiml021-gateway"
    assert so["fallback"]["replicas"] >= so["minReplicaCount"]
    queries = [t["metadata"]["query"] for t in so["triggers"] if t["type"] == "prometheus"]
    names = {q.split("(")[-1].split("{")[0] for q in queries}
    assert names == {"aiml021_gateway_requests_total", "aiml021_gateway_queued_requests"}
    assert names <= exported


def test_selectors_ports_and_pod_security_meet(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for svc in by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        targets = [n for n, labels in pod_labels.items() if sel.items() <= labels.items()]
        targets += [s["metadata"]["name"] for s in by_kind(docs, "StatefulSet")
                    if sel.items() <= s["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert targets, f"service {svc['metadata']['name']} selects no pods"
    pdb = one(docs, "PodDisruptionBudget", "aiml021-gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels["aiml021-gateway"].items()
    for pol in by_kind(docs, "NetworkPolicy"):
        sel = pol["spec"]["podSelector"]["matchLabels"]
        assert any(sel.items() <= labels.items() for labels in pod_labels.values()) or any(
            sel.items() <= s["spec"]["template"]["metadata"]["labels"].items()
            for s in by_kind(docs, "StatefulSet")
        )
    gw = deployments["aiml021-gateway"]["spec"]["template"]["spec"]
    assert gw["securityContext"]["runAsNonRoot"] and gw["automountServiceAccountToken"] is False
    c = gw["containers"][0]["securityContext"]
    assert c["readOnlyRootFilesystem"] and not c["allowPrivilegeEscalation"]
    assert c["capabilities"]["drop"] == ["ALL"]
    tls = next(v for v in gw["volumes"] if v["name"] == "tls")
    assert tls["secret"]["defaultMode"] == 0o400  # the server key readable by its owner only


def test_prod_gives_triton_gpus_and_devices_a_load_balancer() -> None:
    docs = render("prod")
    triton = one(docs, "Deployment", "aiml021-triton")["spec"]["template"]["spec"]
    assert triton["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert one(docs, "Service", "aiml021-gateway-grpc")["spec"]["type"] == "LoadBalancer"
