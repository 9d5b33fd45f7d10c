"""Opens N idle session streams (Hello -> Welcome, then nothing) and holds them.

    python -m benchmarks.gateway.idle_sessions '{"url":..., "sessions":1000, "channels":10}'

Prints ``{"opened": N}`` once every stream got its Welcome, then waits for a line on stdin
before closing everything (the runner measures the gateway's memory in between).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
from aiml021.session.v1 import session_pb2, session_pb2_grpc


async def run(cfg: dict[str, Any]) -> None:
    n, nch = cfg["sessions"], cfg.get("channels", 10)
    # Separate channels: one HTTP/2 connection would cap concurrent streams.
    channels = [
        grpc.aio.insecure_channel(cfg["url"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(nch)
    ]
    calls = []

    async def open_one(i: int) -> None:
        call = session_pb2_grpc.SessionServiceStub(channels[i % nch]).Connect()
        await call.write(
            session_pb2.ConnectRequest(
                hello=session_pb2.Hello(device_id=f"idle-{i}", protocol_version=1)
            )
        )
        msg = await call.read()
        assert msg.WhichOneof("frame") == "welcome"
        calls.append(call)

    for start in range(0, n, 100):
        await asyncio.gather(*[open_one(i) for i in range(start, min(n, start + 100))])
    print(json.dumps({"opened": len(calls)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for call in calls:
        call.cancel()
    for ch in channels:
        await ch.close()


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
