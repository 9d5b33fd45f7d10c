"""The console's Settings page through the public API: what the caller may read of the gateway's
settings, and the one setting an Admin may change at runtime, their own organisation's budget.

``GET /v1/console/settings`` answers the caller's organisation's budget (amount, period, spent),
whether budgets can be changed here, and the privacy controls as switches only (never a key):
pseudonyms on or off, DLP and its kinds, sealing at rest. ``PUT /v1/console/budget`` (Admin,
audited by the authorization table) sets the amount of the caller's own organisation's budget on
the :class:`cloud.core._costs.CostAccountant`: the org comes from the verified token, never from
the body, so an Admin of one tenant cannot touch another's. What cannot change at runtime, and
why, is in docs/console.md (privacy keys and switches, alert rules).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cloud.authz import AUDIT_DETAIL
from cloud.core import current_principal
from cloud.core._costs import CostAccountant
from common.errors import FailedPrecondition, InvalidArgument

MAX_BUDGET = 1e12
"""Largest budget amount accepted (price-table currency)."""
MAX_SETTINGS_BODY = 1024
"""Largest body of a settings write (bytes); anything longer is refused with 413."""


@dataclass(frozen=True, slots=True)
class PrivacyStatus:
    """The gateway's privacy controls as switches (the composition root fills it from the
    ``privacy`` settings section; keys never leave the settings)."""

    pseudonyms: bool = False
    dlp: bool = True
    dlp_kinds: tuple[str, ...] = ()
    sealed_at_rest: bool = False


BodyReader = Callable[[Request, int], Awaitable[bytes]]


class ConsoleSettings:
    """``GET /v1/console/settings`` and ``PUT /v1/console/budget``.

    ``costs`` None: budgets are not changeable at runtime here, ``budget_note`` says why (the
    gateway runs several worker processes, and a write would reach only the one that answered).
    """

    def __init__(
        self,
        body: BodyReader,
        costs: CostAccountant | None = None,
        privacy: PrivacyStatus | None = None,
        budget_note: str = "",
    ) -> None:
        self._body = body
        self._costs = costs
        self._privacy = privacy or PrivacyStatus()
        self._budget_note = budget_note or "cost accounting is not configured on this gateway"

    def _budget(self, org: str) -> dict[str, Any]:
        costs = self._costs
        budget = costs.budgets.get(org) if costs is not None else None
        return {
            "org": org,
            "amount": budget.amount if budget is not None else None,
            "period_s": budget.period_s if budget is not None else None,
            "spent": costs.spent(org) if costs is not None else None,
            "writable": costs is not None,
            "note": "" if costs is not None else self._budget_note,
        }

    async def settings(self, request: Request) -> Response:
        privacy = asdict(self._privacy)
        privacy["dlp_kinds"] = list(self._privacy.dlp_kinds)
        return JSONResponse({"budget": self._budget(current_principal().org), "privacy": privacy})

    async def set_budget(self, request: Request) -> Response:
        body = await self._body(request, MAX_SETTINGS_BODY)
        try:
            doc = json.loads(body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument("body must be a JSON object")
        unknown = set(doc) - {"amount"}
        if unknown:
            raise InvalidArgument(
                f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]} (only amount; "
                "the organisation is the one your token names)"
            )
        amount = doc.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise InvalidArgument("amount: required, a finite number")
        if not math.isfinite(amount):
            raise InvalidArgument("amount: required, a finite number")
        if not 0.0 <= amount <= MAX_BUDGET:
            raise InvalidArgument(f"amount must be in [0, {MAX_BUDGET:g}]")
        if self._costs is None:
            raise FailedPrecondition(f"budgets cannot be changed at runtime: {self._budget_note}")
        org = current_principal().org
        old = self._costs.budgets.get(org)
        self._costs.set_budget(org, float(amount))
        was = f"{old.amount:g}" if old is not None else "none"
        request.scope.setdefault("state", {})[AUDIT_DETAIL] = f"{org}: {amount:g} (was {was})"
        return JSONResponse({"budget": self._budget(org)})


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
_JSON = {"application/json": {"schema": {"type": "object"}}}


def console_settings_openapi_paths() -> dict[str, Any]:
    """The settings routes for ``/openapi.json``."""
    budget_body = {
        "type": "object",
        "additionalProperties": False,
        "required": ["amount"],
        "properties": {"amount": {"type": "number", "minimum": 0, "maximum": MAX_BUDGET}},
    }
    return {
        "/v1/console/settings": {
            "get": {
                "summary": "The caller's organisation's budget and whether it can be changed "
                "here; the privacy controls as switches",
                "responses": {"200": {"description": "OK", "content": _JSON}, "4XX": _ERR},
            }
        },
        "/v1/console/budget": {
            "put": {
                "summary": "Set the amount of the caller's own organisation's budget (this "
                "gateway process, until restart; keeps the period and what was spent in it)",
                "requestBody": {"content": {"application/json": {"schema": budget_body}}},
                "responses": {"200": {"description": "OK", "content": _JSON}, "4XX": _ERR},
            }
        },
    }


__all__ = ["ConsoleSettings", "PrivacyStatus", "console_settings_openapi_paths"]
