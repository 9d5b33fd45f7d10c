"""Whole frames to a real Triton Inference Server: the cloud-only peer of the gateway's pipeline
model. Triton here is PyTriton's tritonserver (python backend only), so the PP-OCRv6 pipeline
runs there as one python-backend model (``scripts/triton/pipeline_server.py``) running the same
``common.pipeline`` steps as the gateway's pipeline backend.

:class:`TritonPipelineServer` starts it (a context manager); :class:`TritonFrameOcr` sends a
frame's JPEG as a KServe-v2 BYTES tensor over HTTP with the binary extension (tritonclient cannot
share a process with our stubs, which the device process imports) and is a
:data:`benchmarks.ocr.app.FrameOcr`: ``await ocr(jpeg) -> (lines, compute ms)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from common.pipeline import Line

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "scripts" / "triton" / "pipeline_server.py"


class TritonPipelineServer:
    """Triton serving ``pipeline`` as ``model``; ``http_port`` is the KServe-v2 REST port."""

    def __init__(self, pipeline: str = "ppocr_v6", model: str = "ppocr_v6") -> None:
        from scripts.triton.launch import _free_port

        self.pipeline, self.model = pipeline, model
        self.http_port, self.grpc_port, self.metrics_port = _free_port(), _free_port(), _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="aiml021-triton-ocr-"))
        self.log_path = self.dir / "triton.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        from common.pipeline import load_pipeline
        from scripts.triton.launch import _libdir, triton_python

        base = load_pipeline(self.pipeline)
        # the Triton venv holds no wheels with the models: name their files
        description = self.dir / "pipeline.json"
        files = {m: {"file": str(base.model_path(m))} for m in base.spec.models}
        description.write_text(json.dumps({"extends": self.pipeline, "models": files}))
        cfg = self.dir / "triton.json"
        cfg.write_text(json.dumps({
            "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port, "model": self.model,
            "description": str(description),
        }))  # fmt: skip
        python = triton_python()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (_libdir(python), env.get("LD_LIBRARY_PATH", "")) if p
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(python), str(SERVER), "--config", str(cfg)], env=env, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import http.client

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Triton exited: {self.log_path.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
                conn.request("GET", f"/v2/models/{self.model}/ready")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"Triton not ready after {timeout_s} s: {self.log_path.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> TritonPipelineServer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def triton_peer(enabled: bool) -> Iterator[TritonPipelineServer | None]:
    """A started :class:`TritonPipelineServer` when ``enabled`` (``--cloud-target triton``)."""
    if not enabled:
        yield None
        return
    with TritonPipelineServer() as server:
        yield server


def session_cpu_seconds(sid: int) -> float:
    """utime + stime of every process in session ``sid`` (a server started with
    ``start_new_session``: Triton, its tritonserver and python-backend stubs)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid:
            total += sum(int(f) for f in fields[11:15]) / ticks
    return total


def infer_body(jpeg: bytes) -> tuple[bytes, dict[str, str]]:
    """A KServe-v2 binary-extension request: ``image`` as one BYTES element, ``lines`` back in
    the binary section, ``cpu_ms`` as JSON."""
    element = struct.pack("<I", len(jpeg)) + jpeg
    head = json.dumps({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1],
                    "parameters": {"binary_data_size": len(element)}}],
        "outputs": [{"name": "lines", "parameters": {"binary_data": True}},
                    {"name": "cpu_ms", "parameters": {"binary_data": False}}],
    }).encode()  # fmt: skip
    return head + element, {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }


def parse_answer(body: bytes, header_length: int) -> tuple[list[Line], float]:
    """(lines, cpu ms) of Triton's binary-extension answer."""
    doc = json.loads(body[:header_length])
    binary, cpu = body[header_length:], 0.0
    lines: list[Line] = []
    for out in doc["outputs"]:
        if out["name"] == "cpu_ms":
            cpu = float(out["data"][0])
        elif out["name"] == "lines":
            n = out["parameters"]["binary_data_size"]
            (length,) = struct.unpack_from("<I", binary)  # one BYTES element
            found = json.loads(binary[4 : 4 + length])
            lines = [Line(d["text"], d["confidence"], d["score"], d["box"]) for d in found]
            binary = binary[n:]
    return lines, cpu


class TritonFrameOcr:
    """Whole frames to Triton's pipeline model over KServe-v2 HTTP (``host:port``)."""

    def __init__(self, host: str, port: int, model: str = "ppocr_v6") -> None:
        import httpx

        self.url = f"http://{host}:{port}/v2/models/{model}/infer"
        self._http = httpx.AsyncClient(timeout=120)

    async def __call__(self, jpeg: bytes) -> tuple[list[Line], float]:
        body, headers = infer_body(jpeg)
        r = await self._http.post(self.url, content=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"Triton answered {r.status_code}: {r.text[:200]}")
        length = int(r.headers.get("Inference-Header-Content-Length", len(r.content)))
        return parse_answer(r.content, length)

    async def close(self) -> None:
        await self._http.aclose()


__all__ = [
    "TritonFrameOcr",
    "TritonPipelineServer",
    "infer_body",
    "parse_answer",
    "session_cpu_seconds",
    "triton_peer",
]
