"""THE authorization table: who may call each gRPC method and each REST route.

One entry per method and route, as data. :class:`cloud.authz.AuthzInterceptor` (gRPC) and
:class:`cloud.authz.AuthzMiddleware` (REST) enforce it and nothing else decides; docs/authz.md is
generated from it (:func:`markdown_table`, checked by a test), and the authorization matrix test
calls every entry as every role. A method or route missing here is refused for everyone.

Object-level checks the handlers make on top (``scope``): a device's session and telemetry are
its own (the device id comes from its certificate); a model outside the caller's org / project /
region scope (``authz.models``) does not exist for it — not listed, NOT_FOUND wherever it is
named (inference, registry, rollouts, statistics, repository control), every such refusal
audited (``cloud.core.ModelRepository``); cache and idempotency keys live in the caller's org /
principal namespace (``cloud.core._tenancy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.core import Role

ADMIN, OPERATOR, OBSERVER, DEVICE, SERVICE = (
    Role.ADMIN,
    Role.OPERATOR,
    Role.OBSERVER,
    Role.DEVICE,
    Role.SERVICE,
)
ROLES: tuple[Role, ...] = (ADMIN, OPERATOR, OBSERVER, DEVICE, SERVICE)


@dataclass(frozen=True)
class Rule:
    """Who may call one method or route."""

    roles: frozenset[Role]
    audit: bool = False
    """A management action: every call is written to the audit trail, whatever its outcome
    (refused calls of every method are written anyway)."""
    public: bool = False
    """Needs no credentials at all (health probes, the API description)."""
    scope: str = ""
    """The object-level check the handler adds (documentation; see the module docstring)."""

    def allows(self, role: Role) -> bool:
        return self.public or role in self.roles


def _r(*roles: Role, audit: bool = False, scope: str = "") -> Rule:
    return Rule(frozenset(roles), audit=audit, scope=scope)


EVERYONE = (ADMIN, OPERATOR, OBSERVER, DEVICE, SERVICE)
READERS = (ADMIN, OPERATOR, OBSERVER, SERVICE)
INFERENCE = (ADMIN, OPERATOR, DEVICE, SERVICE)
PUBLIC = Rule(frozenset(), public=True)

_IN_SCOPE = "models in the caller's scope only (others: NOT_FOUND)"
_LISTS = "lists models in the caller's scope only"
_ORG_MODELS = _IN_SCOPE + "; idempotency keys are the caller's own"
_OWN_NS = "the caller's org namespace"

_KSERVE = "/inference.GRPCInferenceService/"

GRPC_RULES: dict[str, Rule] = {
    "/aiml021.session.v1.SessionService/Connect": _r(
        DEVICE, scope="own session: Hello.device_id must be the certificate's; " + _ORG_MODELS
    ),
    _KSERVE + "ServerLive": _r(*EVERYONE),
    _KSERVE + "ServerReady": _r(*EVERYONE),
    _KSERVE + "ServerMetadata": _r(*EVERYONE),
    _KSERVE + "ModelReady": _r(*EVERYONE, scope=_IN_SCOPE),
    _KSERVE + "ModelMetadata": _r(*EVERYONE, scope=_IN_SCOPE),
    _KSERVE + "ModelConfig": _r(*EVERYONE, scope=_IN_SCOPE),
    _KSERVE + "ModelInfer": _r(*INFERENCE, scope=_ORG_MODELS),
    _KSERVE + "ModelStreamInfer": _r(*INFERENCE, scope=_ORG_MODELS),
    _KSERVE + "ModelStatistics": _r(*READERS, scope=_LISTS),
    _KSERVE + "RepositoryIndex": _r(*READERS, scope=_LISTS),
    _KSERVE + "RepositoryModelLoad": _r(ADMIN, audit=True, scope=_IN_SCOPE),
    _KSERVE + "RepositoryModelUnload": _r(ADMIN, audit=True, scope=_IN_SCOPE),
    "/aiml021.registry.v1.ModelRegistryService/ListModels": _r(*EVERYONE, scope=_LISTS),
    "/aiml021.registry.v1.ModelRegistryService/GetModel": _r(*EVERYONE, scope=_IN_SCOPE),
    "/aiml021.deploy.v1.DeployService/SetRollout": _r(ADMIN, OPERATOR, audit=True, scope=_IN_SCOPE),
    "/aiml021.deploy.v1.DeployService/GetRollout": _r(*READERS, scope=_IN_SCOPE),
    "/aiml021.cache.v1.CacheService/Get": _r(*INFERENCE, scope=_OWN_NS),
    "/aiml021.cache.v1.CacheService/Put": _r(ADMIN, OPERATOR, SERVICE, audit=True, scope=_OWN_NS),
    "/aiml021.telemetry.v1.TelemetryService/Report": _r(
        DEVICE, scope="own telemetry: events carry the certificate's device id"
    ),
    "/aiml021.policy.v1.PolicyService/Decide": _r(*INFERENCE),
    "/aiml021.policy.v1.PolicyService/ReportOutcome": _r(ADMIN, OPERATOR, SERVICE, audit=True),
    "/aiml021.policy.v1.PolicyService/GetPolicy": _r(*EVERYONE),
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _r(*EVERYONE),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _r(*EVERYONE),
}
"""Full gRPC method name -> rule."""

REST_RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/v1/infer"): _r(*INFERENCE, scope=_ORG_MODELS),
    ("POST", "/v1/features"): _r(*INFERENCE, scope=_ORG_MODELS),
    ("GET", "/v1/models"): _r(*EVERYONE, scope=_LISTS),
    ("GET", "/v1/models/{name}"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("POST", "/v1/policy/decide"): _r(*INFERENCE),
    ("POST", "/v1/policy/outcomes"): _r(ADMIN, OPERATOR, SERVICE, audit=True),
    ("POST", "/v1/telemetry"): _r(DEVICE, scope="own telemetry"),
    ("POST", "/v1/cache/get"): _r(*INFERENCE, scope=_OWN_NS),
    ("POST", "/v1/cache/put"): _r(ADMIN, OPERATOR, SERVICE, audit=True, scope=_OWN_NS),
    ("POST", "/v1/deploy/canary"): _r(ADMIN, OPERATOR, audit=True, scope=_IN_SCOPE),
    ("GET", "/v1/deploy/rollouts/{name}"): _r(*READERS, scope=_IN_SCOPE),
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2"): _r(*EVERYONE),
    ("GET", "/v2/models/stats"): _r(*READERS, scope=_LISTS),
    ("POST", "/v2/repository/index"): _r(*READERS, scope=_LISTS),
    ("POST", "/v2/repository/models/{name}/load"): _r(ADMIN, audit=True, scope=_IN_SCOPE),
    ("POST", "/v2/repository/models/{name}/unload"): _r(ADMIN, audit=True, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/ready"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/config"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/stats"): _r(*READERS, scope=_IN_SCOPE),
    ("POST", "/v2/models/{name}/infer"): _r(*INFERENCE, scope=_ORG_MODELS),
    ("GET", "/v2/models/{name}/versions/{version}"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/versions/{version}/ready"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/versions/{version}/config"): _r(*EVERYONE, scope=_IN_SCOPE),
    ("GET", "/v2/models/{name}/versions/{version}/stats"): _r(*READERS, scope=_IN_SCOPE),
    ("POST", "/v2/models/{name}/versions/{version}/infer"): _r(*INFERENCE, scope=_ORG_MODELS),
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/v1/console/summary"): _r(
        *READERS, scope="per-model rows of models in the caller's scope only"
    ),
    ("POST", "/v1/console/simulate"): _r(ADMIN, OPERATOR),
    ("GET", "/v1/policies"): _r(*READERS),
    ("POST", "/v1/policies"): _r(ADMIN, OPERATOR, audit=True),
    ("GET", "/v1/policies/experiments"): _r(*READERS),
    ("POST", "/v1/policies/experiments"): _r(ADMIN, OPERATOR, audit=True),
    ("POST", "/v1/policies/experiments/{name}/stop"): _r(ADMIN, OPERATOR, audit=True),
    ("GET", "/v1/console/settings"): _r(*READERS, scope="the caller's org's budget only"),
    ("PUT", "/v1/console/budget"): _r(ADMIN, audit=True, scope="the caller's own org's budget"),
    # The console's static files (no data; mTLS still admits only CA-signed clients). Its data
    # comes from the routes above, each under its own rule and the caller's token.
    ("GET", "/console"): PUBLIC,
}
"""(HTTP method, route path template) -> rule."""


def grpc_rule(method: str) -> Rule | None:
    """The rule of a full gRPC method name (None: not in the table, refused)."""
    return GRPC_RULES.get(method)


def rest_rule(method: str, route: str) -> Rule | None:
    """The rule of an HTTP method on a route template (HEAD is GET's)."""
    return REST_RULES.get(("GET" if method == "HEAD" else method, route))


def _cells(rule: Rule) -> list[str]:
    if rule.public:
        return ["public"] * len(ROLES)
    return ["✓" if role in rule.roles else "" for role in ROLES]


def markdown_table() -> str:
    """The table as Markdown (docs/authz.md embeds exactly this)."""
    head = "| {} | " + " | ".join(r.value for r in ROLES) + " | audited | object-level check |"
    sep = "|---|" + "---|" * len(ROLES) + "---|---|"
    lines = ["### gRPC", "", head.format("method"), sep]
    for method, rule in GRPC_RULES.items():
        cells = " | ".join(_cells(rule))
        lines.append(f"| `{method}` | {cells} | {'✓' if rule.audit else ''} | {rule.scope} |")
    lines += ["", "### REST", "", head.format("route"), sep]
    for (verb, route), rule in REST_RULES.items():
        cells = " | ".join(_cells(rule))
        lines.append(f"| `{verb} {route}` | {cells} | {'✓' if rule.audit else ''} | {rule.scope} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "GRPC_RULES",
    "PUBLIC",
    "REST_RULES",
    "ROLES",
    "Rule",
    "grpc_rule",
    "markdown_table",
    "rest_rule",
]
