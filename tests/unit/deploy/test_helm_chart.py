"""deploy/helm/aiml021: the chart renders with Helm's own code (helm-python-sdk: Helm 4's Go SDK as
a shared library, no helm binary) for every values file, lints clean, every object validates as
the kustomize overlays' do, and chart and overlays agree on what runs — pod specs whole (images,
ports, probes, security contexts, resources, env, volumes), Services, autoscalers, disruption
budgets, network policies, the gateway's config — so the two packagings cannot drift. Values the
schema or the chart's own checks refuse fail before anything renders, naming the value."""

from __future__ import annotations

import base64
import copy
import datetime
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from cloud._settings import GatewaySettings
from tests.unit.deploy.test_k8s_manifests import (
    KUBERNETES_VERSION,
    SCALEDOBJECT_SCHEMA,
    by_kind,
    one,
)
from tests.unit.deploy.test_k8s_manifests import (
    render as render_kustomize,
)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "aiml021"
VALUES = ROOT / "deploy" / "helm" / "values"
RELEASE = "aiml021"  # the release name the docs install: object names equal deploy/k8s's
NAMESPACES = {"dev": "aiml021-dev", "staging": "aiml021-staging", "prod": "aiml021"}
INSTANCE = "app.kubernetes.io/instance"
GATEWAY_CONFIG = "aiml021-gateway-config"
Docs = list[dict[str, Any]]


def values_of(env: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((VALUES / f"{env}.yaml").read_text())
    return loaded


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = "aiml021",
    chart: Path = CHART,
) -> Docs:
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=release, namespace=namespace, is_install=True)
    docs: Docs = []
    for path, text in sorted(manifests.items()):
        if not path.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module", params=list(NAMESPACES))
def both(request: pytest.FixtureRequest) -> tuple[str, Docs, Docs]:
    env: str = request.param
    return env, render_chart(values_of(env), namespace=NAMESPACES[env]), render_kustomize(env)


def without_instance(node: Any) -> Any:
    """A spec with the chart's release label taken out of every selector: kustomize has one
    installation per namespace, the chart tells releases apart by app.kubernetes.io/instance."""
    if isinstance(node, list):
        return [without_instance(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: without_instance(v) for k, v in node.items() if k != INSTANCE}
    if out.get("matchLabels") == {}:
        del out["matchLabels"]
    return out


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = without_instance(copy.deepcopy(workload["spec"]["template"]["spec"]))
    for vol in spec.get("volumes", []):
        if vol.get("configMap", {}).get("name", "").startswith(GATEWAY_CONFIG):
            vol["configMap"]["name"] = GATEWAY_CONFIG  # kustomize appends a content hash
    return spec


def gateway_toml(docs: Docs) -> dict[str, Any]:
    (cm,) = [c for c in by_kind(docs, "ConfigMap")
             if c["metadata"]["name"].startswith(GATEWAY_CONFIG)]  # fmt: skip
    return tomllib.loads(cm["data"]["gateway.toml"])


SECRET_VALUES = {
    "redis-url": "redis://redis:6379/0",
    "metadata-url": "postgresql://aiml021:pw@postgres:5432/aiml021",
    "access-key": "aiml021",
    "secret-key": "not-a-real-secret",
}


def load_as_the_pod_does(
    docs: Docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> GatewaySettings:
    """GatewaySettings as ``aiml021 serve --config`` loads them in the pod: the rendered
    gateway.toml as the file, the container's env (Secret references resolved) over it."""
    (cm,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == GATEWAY_CONFIG]
    config = tmp_path / "gateway.toml"
    config.write_text(cm["data"]["gateway.toml"])
    container = one(docs, "Deployment", "aiml021-gateway")["spec"]["template"]["spec"]
    for env in container["containers"][0]["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        monkeypatch.setenv(env["name"], SECRET_VALUES[ref["key"]] if ref else env["value"])
    return GatewaySettings.load(config)


# --- the chart renders, lints and validates --------------------------------------------------


def test_helm_is_the_real_library() -> None:
    assert helm.helm_sdk_version().startswith("v4.")
    assert Path(helm.library_path).is_file()


@pytest.mark.parametrize("env", list(NAMESPACES))
def test_the_chart_lints_clean_for_every_values_file(env: str) -> None:
    report = helm.lint(CHART, values_of(env), strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_rendered_object_validates(both: tuple[str, Docs, Docs]) -> None:
    env, docs, _ = both
    assert docs
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACES[env]
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, SCALEDOBJECT_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_packaged_chart_renders_what_the_directory_does(tmp_path: Path) -> None:
    archive = Path(helm.package(CHART, destination=tmp_path))
    assert archive.name == "aiml021-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert "aiml021/values.schema.json" in names and "aiml021/templates/networkpolicy.yaml" in names
    prod = values_of("prod")
    assert render_chart(prod, chart=archive) == render_chart(prod)


# --- chart and kustomize agree -----------------------------------------------------------------


def test_chart_and_overlay_make_the_same_objects(both: tuple[str, Docs, Docs]) -> None:
    _, chart, kustomize = both

    def names(docs: Docs) -> set[tuple[str, str]]:
        # Secrets: kustomize ships placeholder shapes, the chart refers to Secrets made out of
        # band unless told to create them (test below). ConfigMap: compared by content.
        return {(d["kind"], d["metadata"]["name"]) for d in docs
                if d["kind"] not in ("Secret", "ConfigMap")}  # fmt: skip

    assert names(chart) == names(kustomize)


def test_chart_and_overlay_run_the_same_pods(both: tuple[str, Docs, Docs]) -> None:
    _, chart, kustomize = both
    for kind, name in [("Deployment", "aiml021-gateway"), ("Deployment", "aiml021-triton"),
                       ("StatefulSet", "aiml021-minio")]:  # fmt: skip
        ours, theirs = one(chart, kind, name), one(kustomize, kind, name)
        # The whole pod spec: images, args, ports, env, probes, resources, security contexts,
        # volumes, grace period, topology spread.
        assert pod_spec(ours) == pod_spec(theirs), name
        assert theirs["spec"]["template"]["metadata"]["labels"].items() <= (
            ours["spec"]["template"]["metadata"]["labels"].items()
        )
        for key in ("strategy", "revisionHistoryLimit", "volumeClaimTemplates", "serviceName"):
            assert ours["spec"].get(key) == theirs["spec"].get(key), (name, key)
    # With an autoscaler the chart leaves the gateway's replica count to it (an upgrade must not
    # reset it); Triton's is fixed and must match.
    assert "replicas" not in one(chart, "Deployment", "aiml021-gateway")["spec"]
    assert (one(chart, "Deployment", "aiml021-triton")["spec"]["replicas"]
            == one(kustomize, "Deployment", "aiml021-triton")["spec"]["replicas"])  # fmt: skip


def test_chart_and_overlay_expose_scale_and_fence_alike(both: tuple[str, Docs, Docs]) -> None:
    _, chart, kustomize = both
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ScaledObject",
                 "NetworkPolicy"):  # fmt: skip
        ours = {d["metadata"]["name"]: without_instance(d["spec"]) for d in by_kind(chart, kind)}
        theirs = {d["metadata"]["name"]: d["spec"] for d in by_kind(kustomize, kind)}
        assert ours == theirs, kind


def test_chart_and_overlay_configure_the_gateway_alike(
    both: tuple[str, Docs, Docs], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, chart, kustomize = both
    ours, theirs = gateway_toml(chart), gateway_toml(kustomize)
    # kustomize's file also names the store URLs; both take the real ones from the Secret (env).
    for key in ("redis_url", "metadata_url"):
        theirs["stores"].pop(key)
    assert ours == theirs
    settings = load_as_the_pod_does(chart, tmp_path, monkeypatch)
    assert settings.backend == "triton" and settings.triton.url == "aiml021-triton:8001"
    assert settings.artifacts.endpoint == "http://aiml021-minio:9000"
    assert settings.stores.redis_url == SECRET_VALUES["redis-url"]


# --- pieces fit ----------------------------------------------------------------------------------


def test_selectors_reach_only_their_own_release() -> None:
    """Two releases in one namespace: every Service, PDB, NetworkPolicy and autoscaler of one
    selects its own pods and none of the other's."""
    a = render_chart(values_of("prod"), release="aiml021")
    b = render_chart(values_of("prod"), release="aiml021-canary")
    assert not {(d["kind"], d["metadata"]["name"]) for d in a} & {
        (d["kind"], d["metadata"]["name"]) for d in b
    }
    for mine, other in ((a, b), (b, a)):
        pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
                for d in mine + other if d["kind"] in ("Deployment", "StatefulSet")}  # fmt: skip
        own = {d["metadata"]["name"] for d in mine if d["kind"] in ("Deployment", "StatefulSet")}
        selectors = [s["spec"]["selector"] for s in by_kind(mine, "Service")]
        selectors += [p["spec"]["selector"]["matchLabels"]
                      for p in by_kind(mine, "PodDisruptionBudget")]  # fmt: skip
        selectors += [n["spec"]["podSelector"]["matchLabels"]
                      for n in by_kind(mine, "NetworkPolicy")]  # fmt: skip
        for sel in selectors:
            hit = {n for n, labels in pods.items() if sel.items() <= labels.items()}
            assert hit and hit <= own, sel
        for so in by_kind(mine, "ScaledObject"):
            assert so["spec"]["scaleTargetRef"]["name"] in own


def _pem_material() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiml021-gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pub = ed25519.Ed25519PrivateKey.generate().public_key()
    return {
        "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "signing": pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }


def test_secrets_the_chart_creates_are_the_ones_the_pods_read() -> None:
    pem = _pem_material()
    values = values_of("dev") | {
        "tls": {"create": True, "caPem": pem["cert"], "serverPem": pem["cert"],
                "serverKey": pem["key"]},
        "stores": {"create": True, "redisUrl": SECRET_VALUES["redis-url"],
                   "metadataUrl": SECRET_VALUES["metadata-url"]},
        "bundleSigning": {"create": True, "publicKey": pem["signing"]},
        "privacy": {"create": True, "pseudonymKey": "ab" * 32,
                    "atRestRing": '{"primary": "k1", "keys": {"k1": "' + "cd" * 32 + '"}}'},
        "artifacts": {"credentials": {"create": True, "accessKey": SECRET_VALUES["access-key"],
                                      "secretKey": SECRET_VALUES["secret-key"]}},
    }  # fmt: skip
    docs = render_chart(values, namespace="aiml021-dev")
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in by_kind(docs, "Secret")
    }
    for s in by_kind(docs, "Secret"):
        kubernetes_validate.validate(s, KUBERNETES_VERSION, strict=True)
    assert secrets["aiml021-gateway-tls"] == {
        "ca.pem": pem["cert"], "server.pem": pem["cert"], "server.key": pem["key"]
    }  # fmt: skip
    assert secrets["aiml021-bundle-signing"] == {"bundle-signing.pub": pem["signing"]}
    assert secrets["aiml021-gateway-privacy"]["pseudonym.key"] == "ab" * 32
    # Every key a pod reads from a Secret is in the Secret the chart made.
    for kind, name in [("Deployment", "aiml021-gateway"), ("Deployment", "aiml021-triton"),
                       ("StatefulSet", "aiml021-minio")]:  # fmt: skip
        for env in one(docs, kind, name)["spec"]["template"]["spec"]["containers"][0]["env"]:
            if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                assert ref["key"] in secrets[ref["name"]], (name, ref)
    gw = one(docs, "Deployment", "aiml021-gateway")["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"] for v in gw["volumes"] if "secret" in v}
    assert mounted == {"aiml021-gateway-tls", "aiml021-bundle-signing", "aiml021-gateway-privacy"}


def test_a_changed_gateway_config_rolls_the_pods(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = one(render_chart(values), "Deployment", "aiml021-gateway")
        annotation: str = dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return annotation

    base = values_of("prod")
    batched = copy.deepcopy(base)
    batched["gateway"]["extraConfig"] = "[batching]\nmax_batch_size = 16\n"
    assert checksum(base) == checksum(copy.deepcopy(base))
    assert checksum(base) != checksum(batched)
    settings = load_as_the_pod_does(render_chart(batched), tmp_path, monkeypatch)
    assert settings.batching.max_batch_size == 16


def test_s3_outside_the_cluster_drops_minio_and_keeps_triton_on_the_bucket() -> None:
    docs = render_chart({"minio": {"enabled": False},
                         "artifacts": {"endpoint": "https://s3.eu-west-1.amazonaws.com",
                                       "credentials": {"enabled": False}}})  # fmt: skip
    assert not [d for d in docs if "minio" in d["metadata"]["name"]]
    triton = one(docs, "Deployment", "aiml021-triton")["spec"]["template"]["spec"]["containers"][0]
    assert ("--model-repository=s3://https://s3.eu-west-1.amazonaws.com/aiml021-bundles/triton"
            in triton["args"])  # fmt: skip
    assert {e["name"] for e in triton["env"]} == {"AWS_DEFAULT_REGION"}  # an IAM role instead
    gw = one(docs, "NetworkPolicy", "aiml021-gateway")["spec"]["egress"]
    assert {"port": 443, "protocol": "TCP"} in [p for rule in gw for p in rule["ports"]]
    assert gateway_toml(docs)["artifacts"]["endpoint"] == "https://s3.eu-west-1.amazonaws.com"
    for doc in docs:
        if not doc["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# --- values refused ------------------------------------------------------------------------------

REFUSED_BY_SCHEMA = [
    pytest.param({"gateway": {"replica": 3}}, "additional properties 'replica'", id="misspelt-key"),
    pytest.param({"gateway": {"uid": 0}}, "/gateway/uid", id="gateway-as-root"),
    pytest.param({"triton": {"uid": 0}}, "/triton/uid", id="triton-as-root"),
    pytest.param(
        {"gateway": {"image": {"tag": "0.1.0\nprivileged: true"}}},
        "/gateway/image/tag",
        id="yaml-injection-in-tag",
    ),
    pytest.param(
        {"gateway": {"image": {"digest": "sha256:abc"}}}, "/gateway/image/digest", id="short-digest"
    ),
    pytest.param(
        {
            "gateway": {
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": None}}
            }
        },
        "memory",
        id="no-memory-limit",
    ),
    pytest.param(
        {
            "gateway": {
                "resources": {
                    "requests": {"cpu": "lots", "memory": "1Gi"},
                    "limits": {"memory": "1Gi"},
                }
            }
        },
        "/gateway/resources/requests/cpu",
        id="bad-quantity",
    ),
    pytest.param({"gateway": {"ports": {"grpc": 70000}}}, "/gateway/ports/grpc", id="port-range"),
    pytest.param({"gateway": {"backend": "tensorrt"}}, "/gateway/backend", id="unknown-backend"),
    pytest.param(
        {"podDisruptionBudget": {"maxUnavailable": 0}},
        "/podDisruptionBudget/maxUnavailable",
        id="pdb-blocks-every-drain",
    ),
    pytest.param(
        {"podDisruptionBudget": {"maxUnavailable": "150%"}},
        "/podDisruptionBudget/maxUnavailable",
        id="pdb-over-100-percent",
    ),
    pytest.param(
        {"service": {"grpc": {"type": "ClusterIP", "externalTrafficPolicy": "Local"}}},
        "/service/grpc/externalTrafficPolicy",
        id="etp-on-clusterip",
    ),
    pytest.param(
        {"autoscaling": {"keda": {"enabled": True, "prometheusAddress": "prom:9090"}}},
        "/autoscaling/keda/prometheusAddress",
        id="prometheus-without-scheme",
    ),
    pytest.param(
        {"autoscaling": {"cpuUtilization": 0}}, "/autoscaling/cpuUtilization", id="zero-cpu-target"
    ),
    pytest.param({"tls": {"create": True}}, "/tls/caPem", id="tls-secret-without-material"),
    pytest.param(
        {
            "tls": {
                "create": True,
                "caPem": "-----BEGIN CERTIFICATE-----\nx\n",
                "serverPem": "-----BEGIN CERTIFICATE-----\nx\n",
                "serverKey": "-----BEGIN CERTIFICATE-----\nx\n",
            }
        },
        "/tls/serverKey",
        id="certificate-where-the-key-goes",
    ),
    # The registry's private signing key must never reach the gateways.
    pytest.param(
        {"bundleSigning": {"create": True, "publicKey": "-----BEGIN PRIVATE KEY-----\nx\n"}},
        "/bundleSigning/publicKey",
        id="private-signing-key",
    ),
    pytest.param({"privacy": {"create": True}}, "/privacy/pseudonymKey", id="privacy-no-keys"),
    pytest.param(
        {"privacy": {"create": True, "pseudonymKey": "too short", "atRestRing": "{}"}},
        "/privacy/pseudonymKey",
        id="pseudonym-key-not-32-bytes",
    ),
    pytest.param(
        {"privacy": {"create": True, "pseudonymKey": "ab" * 32, "atRestRing": "{}"}},
        "/privacy/atRestRing",
        id="at-rest-ring-not-a-ring",
    ),
    pytest.param(
        {
            "stores": {
                "create": True,
                "redisUrl": "redis://r:6379/0",
                "metadataUrl": "mysql://db/aiml021",
            }
        },
        "/stores/metadataUrl",
        id="not-postgresql",
    ),
    pytest.param(
        {"artifacts": {"credentials": {"create": True, "accessKey": "ab", "secretKey": "short"}}},
        "/artifacts/credentials",
        id="minio-refuses-short-credentials",
    ),
    pytest.param(
        {"artifacts": {"credentials": {"enabled": False}}},
        "/artifacts/credentials/enabled",
        id="minio-without-root-credentials",
    ),
    pytest.param({"triton": {"enabled": False}}, "/triton/url", id="triton-backend-without-triton"),
    pytest.param({"artifacts": {"bucket": "Bundles_Here"}}, "/artifacts/bucket", id="bad-bucket"),
    pytest.param(
        {"artifacts": {"endpoint": "http://minio:9000/path"}},
        "/artifacts/endpoint",
        id="endpoint-with-path",
    ),
    pytest.param({"fullnameOverride": "Aiml021_Prod"}, "/fullnameOverride", id="not-a-dns-label"),
]


@pytest.mark.parametrize(("values", "names"), REFUSED_BY_SCHEMA)
def test_the_schema_refuses(values: dict[str, Any], names: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=names):
            chart.validate_schema(values)
    # helm template / install check the same schema before rendering anything.
    with pytest.raises(helm.HelmValuesError, match=names):
        render_chart(values)


REFUSED_BY_THE_CHART = [
    pytest.param(
        {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        r"autoscaling.minReplicas \(5\) must not exceed",
        id="min-over-max",
    ),
    pytest.param(
        {"autoscaling": {"keda": {"enabled": True, "fallback": {"replicas": 1}}}},
        r"fallback.replicas \(1\) must be at least",
        id="fallback-below-floor",
    ),
    pytest.param(
        {"gateway": {"drainGraceSeconds": 40}},
        r"terminationGracePeriodSeconds \(40\) must exceed",
        id="killed-mid-drain",
    ),
    pytest.param(
        {"gateway": {"extraConfig": "[tls]\ninsecure = true\n"}},
        'extraConfig sets "tls"',
        id="extra-config-turns-tls-off",
    ),
    pytest.param(
        {"gateway": {"extraConfig": "[batching]\nx = 1\n  [ server ]\nport = 1\n"}},
        'extraConfig sets "server"',
        id="extra-config-redefines-server",
    ),
]


@pytest.mark.parametrize(("values", "message"), REFUSED_BY_THE_CHART)
def test_the_chart_refuses(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        render_chart(values)


def test_lint_reports_values_the_schema_refuses() -> None:
    report = helm.lint(CHART, {"gateway": {"uid": 0}}, strict=True)
    errors = [m["error"] for m in report["messages"] if m["severity"] == 3]
    assert any("/gateway/uid" in e for e in errors), report
