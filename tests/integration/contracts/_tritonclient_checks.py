"""Client side of test_tritonclient_compat: unchanged tritonclient (sync and aio) against a URL.

Runs in a child process (see tests/support/tritonclient.py) and prints one JSON document.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import tritonclient.grpc as tc
import tritonclient.grpc.aio as tc_aio
from tritonclient.utils import InferenceServerException


def sync_checks(url: str) -> dict[str, Any]:
    client = tc.InferenceServerClient(url)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "metadata": client.get_model_metadata("fmnist", as_json=True),
    }
    try:
        client.get_model_metadata("nope")
    except InferenceServerException as exc:
        out["unknown"] = {"status": exc.status(), "message": exc.message()}
    client.close()
    return out


async def aio_checks(url: str) -> dict[str, Any]:
    async with tc_aio.InferenceServerClient(url) as client:
        meta = await client.get_model_metadata("fmnist", as_json=True)
        return {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "metadata": meta,
        }


if __name__ == "__main__":
    url = json.loads(sys.argv[1])["url"]
    print(json.dumps({"sync": sync_checks(url), "aio": asyncio.run(aio_checks(url))}))
