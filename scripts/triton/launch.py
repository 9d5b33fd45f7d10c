"""Start and stop a real Triton Inference Server (nvidia-pytriton, in ``.venv-triton``) serving
model specs, named as :func:`cloud.backends.triton.triton_model_ref` addresses them.

A development and test tool, not part of the installed package: tests and benchmarks use
:class:`TritonServer`; ``python -m scripts.triton.launch a.onnx b.onnx`` serves files by hand.
The server process runs :mod:`scripts.triton.server` with the Triton venv's interpreter.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloud.backends.triton import triton_model_ref
from cloud.core import ModelSpec, spec_from_onnx
from common.errors import Unavailable

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("server.py")


def triton_python(venv: str | Path | None = None) -> Path:
    """Interpreter of the Triton venv (``AIML021_TRITON_VENV`` or ``<repo>/.venv-triton``)."""
    root = Path(venv or os.environ.get("AIML021_TRITON_VENV") or REPO_ROOT / ".venv-triton")
    python = root / "bin" / "python"
    if not python.exists():
        raise Unavailable(
            f"{python} not found: run scripts/setup_triton.sh to create the Triton venv"
        )
    return python


def _libdir(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    # Never the same port twice from this process: the kernel may hand a just-closed port out
    # again, and Triton refuses to start with its gRPC and metrics ports equal.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class TritonServer:
    """A Triton process serving ``models``; ``grpc_target`` is what the backend connects to.

    ``start`` waits until every model is ready; ``stop`` ends the whole process group (Triton
    and its python-backend stubs). Ports are fixed at construction so a restart comes back on
    the same address.
    """

    models: Sequence[ModelSpec]
    max_queue_delay_us: int = 500
    threads_per_model: int = 1
    venv: str | Path | None = None
    grpc_port: int = field(default_factory=_free_port)
    http_port: int = field(default_factory=_free_port)
    metrics_port: int = field(default_factory=_free_port)
    log_path: Path | None = None
    restricted_endpoints: Sequence[str] | None = None
    """Triton APIs that need PyTriton's access token (None: PyTriton's default list; []: none,
    as a plain tritonserver serves statistics and the repository API)."""
    _proc: subprocess.Popen[bytes] | None = None
    _dir: Path | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def config(self) -> dict[str, object]:
        """The launcher's JSON config."""
        models = []
        for spec in self.models:
            name, version = triton_model_ref(spec.key)
            models.append({
                "triton_name": name,
                "triton_version": int(version),
                "onnx_path": str(Path(spec.onnx_path).resolve()),
                "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.inputs],
                "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.outputs],
                "max_batch_size": spec.max_batch_size,
                "max_queue_delay_us": self.max_queue_delay_us,
                "threads": self.threads_per_model,
            })  # fmt: skip
        return {
            "grpc_port": self.grpc_port,
            "http_port": self.http_port,
            "metrics_port": self.metrics_port,
            "models": models,
            "restricted_endpoints": (
                None if self.restricted_endpoints is None else list(self.restricted_endpoints)
            ),
        }

    def start(self, timeout_s: float = 90.0) -> None:
        """Launch Triton and block until it and every model report ready."""
        python = triton_python(self.venv)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="aiml021-triton-"))
        cfg = self._dir / "triton.json"
        cfg.write_text(json.dumps(self.config()))
        env = dict(os.environ)
        libdir = _libdir(python)
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        self.log_path = self.log_path or self._dir / "triton.log"
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen(
                [str(python), str(LAUNCHER), "--config", str(cfg)],
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import http.client

        paths = ["/v2/health/ready"] + [
            "/v2/models/{}/versions/{}/ready".format(*triton_model_ref(m.key)) for m in self.models
        ]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise Unavailable(
                    f"Triton exited with {self._proc.returncode}; see {self.log_path}: {self.log_tail()}"
                )
            try:
                while paths:
                    conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1)
                    conn.request("GET", paths[0])
                    ok = conn.getresponse().status == 200
                    conn.close()
                    if not ok:
                        break
                    paths.pop(0)
                if not paths:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise Unavailable(
            f"Triton not ready after {timeout_s}s; see {self.log_path}: {self.log_tail()}"
        )

    def log_tail(self, n: int = 2000) -> str:
        """The end of the server's log (for error messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def kill(self) -> None:
        """Kill Triton abruptly (SIGKILL to its process group), as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """Stop Triton (SIGTERM, then SIGKILL after 15 s)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scripts.triton.launch ONNX...``: serve ONNX files (for manual runs)."""
    import argparse

    parser = argparse.ArgumentParser(description="serve ONNX files on a real Triton (pytriton)")
    parser.add_argument("onnx", nargs="+", type=Path)
    args = parser.parse_args(argv)
    server = TritonServer([spec_from_onnx(p) for p in args.onnx])
    server.start()
    print(f"Triton gRPC on {server.grpc_target}; Ctrl-C to stop", file=sys.stderr)  # CLI output
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
