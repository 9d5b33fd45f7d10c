"""A loopback TCP proxy that tests point clients at, to lose connections the way a crashed
gateway or a broken link loses them: :meth:`TcpProxy.drop` resets every open connection at
once (nothing is drained, nothing more is answered), and ``target = None`` refuses new ones
until a gateway is behind it again."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards each connection on 127.0.0.1:``port`` to 127.0.0.1:``target``."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.target is None:
                return
            try:
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            pair = (writer, upstream)
            self._pairs.add(pair)
            try:
                await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
            finally:
                self._pairs.discard(pair)
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()
            self._handlers.discard(task)

    def drop(self) -> None:
        """Reset every open connection, both ways."""
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.drop()
        await asyncio.gather(*list(self._handlers), return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    # One side ended: end the other (a reset on either side ends both).
    dst.transport.abort()


__all__ = ["TcpProxy"]
