"""The cloud host of the end-to-end benchmark: our gateway (mTLS), a real Triton serving the
same full model, and one link emulator in front of each, listening on the cloud address.

Started by ``benchmarks.e2e.run`` inside the cloud network namespace; speaks JSON lines:
stdout's first line is ``{"gateway": port, "triton": port}`` (the emulated ports); then each line
on stdin is a command answered by one line on stdout:

* ``{"cmd": "impair", ...Impairment fields}`` — impairments for connections opened from now on;
* ``{"cmd": "counters"}`` — bytes through each emulator and cloud compute seconds so far
  (gateway: sum of ``aiml021_gateway_compute_seconds``; Triton: ``nv_inference_compute_infer_duration_us``).

It stops everything it started when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from benchmarks.e2e._shared import ROOT, gateway_process, metric_sum
from benchmarks.e2e.linkem import Impairment, LinkEmulator

log = logging.getLogger(__name__)
TRITON_MODEL = "fmnist_full"
GATEWAY_COMPUTE = "aiml021_gateway_compute_seconds_sum"
TRITON_COMPUTE = "nv_inference_compute_infer_duration_us"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds main() so its finally stops the gateway and Triton


async def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="address the emulators listen on")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--no-triton", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="aiml021-cloud-"))

    with contextlib.ExitStack() as stack:  # unwinds in reverse: Triton, then the gateway
        ports = stack.enter_context(
            gateway_process(workdir, args.models, args.tls_dir, result_cache=False)
        )
        emulators = {"gateway": LinkEmulator(("127.0.0.1", ports["port"]), Impairment())}
        triton = None
        triton_name = ""
        if not args.no_triton:
            from cloud.backends.triton import triton_model_ref
            from cloud.core import spec_from_onnx
            from scripts.triton import TritonServer

            spec = spec_from_onnx(args.models / "fmnist_branchy" / "full.onnx", name=TRITON_MODEL)
            triton = TritonServer([spec], log_path=workdir / "triton.log")
            stack.callback(triton.stop)
            await asyncio.to_thread(triton.start)
            emulators["triton"] = LinkEmulator(("127.0.0.1", triton.grpc_port), Impairment())
            triton_name = triton_model_ref(spec.key)[0]
        try:
            listen = {name: await em.start(args.listen, 0) for name, em in emulators.items()}
            info = {**listen, "triton_model": triton_name, "workdir": str(workdir)}
            print(json.dumps(info), flush=True)
            await _serve_commands(emulators, ports["metrics_port"], triton)
        finally:
            for em in emulators.values():
                await em.close()


async def _serve_commands(
    emulators: dict[str, LinkEmulator], gateway_metrics: int, triton: Any
) -> None:
    """Answers the JSON-line commands on stdin until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    names = {f.name for f in fields(Impairment)}
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "impair":
            impairment = Impairment(**{k: v for k, v in cmd.items() if k in names})
            for em in emulators.values():
                em.impairment = impairment
            reply: dict[str, object] = {"ok": True}
        elif cmd["cmd"] == "counters":
            triton_us = metric_sum(triton.metrics_port, TRITON_COMPUTE) if triton else 0.0
            reply = {
                "bytes": {n: [em.bytes_up, em.bytes_down] for n, em in emulators.items()},
                "gateway_compute_s": metric_sum(gateway_metrics, GATEWAY_COMPUTE),
                "triton_compute_s": triton_us / 1e6,
            }
        else:
            reply = {"error": f"unknown command {cmd['cmd']!r}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
