"""The cloud host of the end-to-end benchmark: our gateway (mTLS), a real Triton serving the
same full model, and one link emulator in front of each, listening on the cloud address.

Started by ``benchmarks.e2e.run`` inside the cloud network namespace; speaks JSON lines:
stdout's first line is ``{"gateway": port, "triton": port}`` (the emulated ports); then each line
on stdin is a command answered by one line on stdout:

* ``{"cmd": "profile", ...LinkProfile fields}`` — impairments for connections opened from now on;
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
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import fields
from pathlib import Path

from benchmarks.e2e.linkem import LinkEmulator, LinkProfile

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
TRITON_MODEL = "fmnist_full"


def _scrape(port: int, metric: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and not line.startswith("#"):
            m = re.match(rf"{re.escape(metric)}(\{{[^}}]*\}})?\s+([0-9.eE+-]+)", line)
            if m:
                total += float(m.group(2))
    return total


def start_gateway(
    models: Path, tls_dir: Path, workdir: Path
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    port_file = workdir / "gateway_ports.json"
    # Runs repeat the same test images: a result cache would answer cloud-only from memory.
    env = dict(os.environ, PYTHONUNBUFFERED="1", AIML021_GATEWAY_CACHE_FULL_MODELS="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--host", "127.0.0.1",
         "--port", "0", "--metrics-port", "0", "--port-file", str(port_file), "--tls-dir", str(tls_dir),
         "--metadata-url", f"sqlite:///{workdir / 'metadata.sqlite3'}"],
        stdout=open(workdir / "gateway.log", "ab"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {(workdir / 'gateway.log').read_text()[-2000:]}")
        if port_file.exists() and port_file.stat().st_size:
            with contextlib.suppress(json.JSONDecodeError):
                return proc, json.loads(port_file.read_text())
        time.sleep(0.1)
    raise RuntimeError("gateway did not start in 60 s")


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

    gateway, ports = start_gateway(args.models, args.tls_dir, workdir)
    triton = None
    try:
        emulators: dict[str, LinkEmulator] = {}
        emulators["gateway"] = LinkEmulator(("127.0.0.1", ports["port"]), LinkProfile())
        if not args.no_triton:
            from cloud.backends.triton import spec_from_onnx
            from cloud.backends.triton_launch import TritonServer, triton_model_ref

            spec = spec_from_onnx(args.models / "fmnist_branchy" / "full.onnx", name=TRITON_MODEL)
            triton = TritonServer([spec], log_path=workdir / "triton.log")
            await asyncio.to_thread(triton.start)
            emulators["triton"] = LinkEmulator(("127.0.0.1", triton.grpc_port), LinkProfile())
            triton_name = triton_model_ref(spec.key)[0]
        listen = {name: await em.start(args.listen, 0) for name, em in emulators.items()}
        info = {**listen, "triton_model": triton_name if triton else "", "workdir": str(workdir)}
        print(json.dumps(info), flush=True)

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        names = {f.name for f in fields(LinkProfile)}
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "profile":
                profile = LinkProfile(**{k: v for k, v in cmd.items() if k in names})
                for em in emulators.values():
                    em.profile = profile
                reply: dict[str, object] = {"ok": True}
            elif cmd["cmd"] == "counters":
                reply = {
                    "bytes": {n: [em.bytes_up, em.bytes_down] for n, em in emulators.items()},
                    "gateway_compute_s": _scrape(
                        ports["metrics_port"], "aiml021_gateway_compute_seconds_sum"
                    ),
                    "triton_compute_s": _scrape(
                        triton.metrics_port, "nv_inference_compute_infer_duration_us"
                    )
                    / 1e6
                    if triton
                    else 0.0,
                }
            else:
                reply = {"error": f"unknown command {cmd['cmd']!r}"}
            print(json.dumps(reply), flush=True)
        for em in emulators.values():
            await em.close()
    finally:
        if triton is not None:
            await asyncio.to_thread(triton.stop)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(gateway.pid, signal.SIGTERM)
        try:
            gateway.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait(5)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
