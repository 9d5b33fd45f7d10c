"""The console's settings routes without a server (``cloud.rest._console_settings``): a gateway
that cannot apply a budget to all of its processes refuses the write and says why, and the
caller's organisation always comes from the principal, never from the body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from starlette.requests import Request

from cloud._metrics import GatewayMetrics
from cloud.core import Principal, Role, acting_as
from cloud.core._costs import CostAccountant, Prices
from cloud.rest._console_settings import ConsoleSettings, PrivacyStatus
from common.errors import FailedPrecondition

SEVERAL = "this gateway runs 2 worker processes and a change would reach only one"


def _request() -> Request:
    return Request({"type": "http", "method": "PUT", "path": "/v1/console/budget", "headers": []})


def _body(payload: bytes) -> Callable[[Request, int], Awaitable[bytes]]:
    async def read(request: Request, limit: int) -> bytes:
        assert limit == 1024  # the settings routes read at most 1 KiB
        return payload

    return read


async def test_several_workers_refuse_a_budget_write_and_say_why() -> None:
    routes = ConsoleSettings(_body(b'{"amount": 3}'), None, PrivacyStatus(), SEVERAL)
    with acting_as(Principal("admin", Role.ADMIN, "acme")):
        with pytest.raises(FailedPrecondition, match="2 worker processes"):
            await routes.set_budget(_request())
        view = json.loads(bytes((await routes.settings(_request())).body))
    assert view["budget"]["writable"] is False and SEVERAL in view["budget"]["note"]


async def test_the_org_is_the_principals() -> None:
    costs = CostAccountant(GatewayMetrics(), Prices())
    routes = ConsoleSettings(_body(b'{"amount": 2.5}'), costs)
    with acting_as(Principal("admin", Role.ADMIN, "initech")):
        answer = json.loads(bytes((await routes.set_budget(_request())).body))
    assert answer["budget"]["org"] == "initech" and answer["budget"]["amount"] == 2.5
    assert set(costs.budgets) == {"initech"}
