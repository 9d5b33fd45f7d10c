"""Serves the REST bridge from the gateway's own event loop (uvicorn), behind the same transport
security as gRPC: mTLS with the gateway's CA and TLS 1.3 only, unless ``tls.insecure``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn

from cloud._settings import TlsSettings
from cloud.authz import PeerCertProtocol
from common.auth import ReloadingServerTls, follow_rotation
from common.errors import InvalidArgument

_START_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: the gateway owns SIGINT/SIGTERM and stops REST as
    part of its own graceful shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any, host: str, tls: TlsSettings) -> uvicorn.Config:
    options: dict[str, Any] = {}
    if not tls.insecure:
        files = {name: tls.dir / name for name in ("ca.pem", "server.pem", "server.key")}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise InvalidArgument(f"tls.dir {tls.dir}: {', '.join(missing)} missing for REST")
        options = {
            "ssl_ca_certs": str(files["ca.pem"]),
            "ssl_certfile": str(files["server.pem"]),
            "ssl_keyfile": str(files["server.key"]),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            # hands the verified client certificate to the authorization middleware
            "http": PeerCertProtocol,
        }
    config = uvicorn.Config(
        app, host=host, log_level="warning", access_log=False, lifespan="off", **options
    )
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_3
    return config


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """The listening socket, made with proto IPPROTO_TCP (socket.create_server's is 0): asyncio
    sets TCP_NODELAY only on connections whose socket says TCP, and without it every response on
    a keep-alive connection waited about 40 ms (Nagle's algorithm holding the body until the
    client's delayed ACK of the headers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


class RestServer:
    """The REST front door on ``host:port`` (0 picks a free port, see :attr:`port`)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        tls: TlsSettings,
        *,
        reuse_port: bool = False,
        material: ReloadingServerTls | None = None,
    ) -> None:
        config = _config(app, host, tls)
        if material is not None and config.ssl is not None:
            follow_rotation(config.ssl, material)  # rotated certificates without a restart
        self._server = _Server(config)
        # reuse_port: the other workers of ``serve --workers`` bind the same port
        self._sock = _listen(host, port, reuse_port)
        self.port: int = self._sock.getsockname()[1]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve until :meth:`close`; returns once the server accepts connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="rest")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise InvalidArgument("REST server stopped while starting")
            if loop.time() > deadline:
                raise TimeoutError(f"REST server did not start within {_START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Stop accepting, finish open requests, close the socket."""
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
        self._sock.close()


__all__ = ["RestServer"]
