"""Who is calling: the authenticated principal of the request being served, and the tenant
namespaces its data lives in.

The front doors' authorization layer (``cloud.authz``) resolves a :class:`Principal` from the
transport (a device certificate's URI SAN, or a verified token) and runs the handler inside
:func:`acting_as`; the core reads it with :func:`current_principal` to scope what it keeps
(``cloud.core._tenancy``) and which models it serves and shows (:meth:`Principal.may_use_model`).
A task started while serving a request inherits the principal (``contextvars``).

When the core refuses a request for what it names rather than for who sent it (a model outside
the caller's scope, answered as if it did not exist), it says so with :func:`refused`: the front
door serving the request (``acting_as(..., on_refusal=...)``) writes it to the audit trail.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass


class Role(enum.StrEnum):
    """What a principal may do (the table in ``cloud.authz`` says where)."""

    ADMIN = "Admin"
    """Repository load/unload, registry, everything an operator may."""
    OPERATOR = "Operator"
    """Rollouts and policies, cache writes, everything an observer may."""
    OBSERVER = "Observer"
    """Read-only: registry, rollouts, statistics."""
    DEVICE = "Device"
    """Its own session, inference on its org's models, its own telemetry, cache reads."""
    SERVICE = "Service"
    """A backend system (OAuth2 client credentials): inference, policy decisions and outcomes,
    cache reads and writes."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and its scope (``*``: every project / region of the org)."""

    subject: str
    """Unique id: the device id for devices, the token's ``sub`` otherwise."""
    role: Role
    org: str
    project: str = "*"
    region: str = "*"
    device_id: str = ""
    """The certificate's device id (devices only)."""
    authenticated_by: str = "mtls"
    """``mtls``, ``token``, ``mtls+token`` or ``insecure`` (development, no TLS)."""

    @property
    def is_device(self) -> bool:
        return self.role is Role.DEVICE

    @property
    def unrestricted(self) -> bool:
        """The gateway itself and the development principal (``--insecure``, no TLS): every
        model is theirs."""
        return self.authenticated_by in ("internal", "insecure")

    def may_use_model(self, model: str, model_orgs: Mapping[str, frozenset[str]]) -> bool:
        """True when ``model`` is served to this principal's scope: it may infer on it, see it
        listed and act on it (within what its role may call). ``model_orgs`` lists, per model,
        the scopes it is served to: ``*`` (everyone), ``org``, ``org/project`` or
        ``org/project/region``; a model it does not list is served to everyone. A principal
        scoped to the whole org (project ``*``) uses every model of its org; one scoped to a
        project (or region) uses the org's models and those of its project (or region)."""
        scopes = model_orgs.get(model)
        if scopes is None or "*" in scopes or self.unrestricted:
            return True
        return any(self._within(scope) for scope in scopes)

    def _within(self, scope: str) -> bool:
        org, _, rest = scope.partition("/")
        project, _, region = rest.partition("/")
        if org != self.org:
            return False
        if project and project != "*" and self.project != "*" and project != self.project:
            return False
        return not (region and region != "*" and self.region != "*" and region != self.region)


INTERNAL = Principal("gateway", Role.ADMIN, "default", authenticated_by="internal")
"""The gateway itself (work no request started: loading models at start-up, tests calling the
core directly)."""

RefusalHook = Callable[[str, str], None]
"""Told ``(resource, detail)`` of each request the core refused for what it names."""

_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "aiml021_principal", default=INTERNAL
)
_on_refusal: contextvars.ContextVar[RefusalHook | None] = contextvars.ContextVar(
    "aiml021_on_refusal", default=None
)


def current_principal() -> Principal:
    """The principal of the request being served (:data:`INTERNAL` outside any request)."""
    return _current.get()


def refused(resource: str, detail: str) -> None:
    """Report that the request being served was refused for ``resource`` (e.g. a model outside
    the caller's scope, answered NOT_FOUND): the front door writes it to the audit trail."""
    hook = _on_refusal.get()
    if hook is not None:
        hook(resource, detail)


def refused_model(model: str) -> None:
    """:func:`refused` for a model outside the current principal's scope (answered NOT_FOUND)."""
    p = current_principal()
    refused(
        model,
        f"model {model!r} is outside the caller's scope (org {p.org!r}, project {p.project!r}, "
        f"region {p.region!r}): answered NOT_FOUND",
    )


@contextlib.contextmanager
def acting_as(principal: Principal, on_refusal: RefusalHook | None = None) -> Iterator[Principal]:
    """Run the block (and the tasks it starts) as ``principal``; ``on_refusal`` hears what
    :func:`refused` reports meanwhile."""
    token = _current.set(principal)
    hook = _on_refusal.set(on_refusal)
    try:
        yield principal
    finally:
        try:
            _on_refusal.reset(hook)
            _current.reset(token)
        except ValueError:
            # A stream handler's generator closed from another task (an async-generator
            # finalizer) runs this in another context, which is being discarded anyway.
            pass


__all__ = [
    "INTERNAL",
    "Principal",
    "RefusalHook",
    "Role",
    "acting_as",
    "current_principal",
    "refused",
    "refused_model",
]
