"""The REST listener's connections have TCP_NODELAY: without it every response on a keep-alive
connection waited ~40 ms for the client's delayed ACK (asyncio sets the option only on sockets
whose proto says TCP; socket.create_server's says 0)."""

from __future__ import annotations

import asyncio
import socket

from cloud.rest._serve import _listen


async def test_accepted_connections_get_tcp_nodelay() -> None:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    listener = _listen("127.0.0.1", 0, reuse_port=False)
    assert listener.proto == socket.IPPROTO_TCP
    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    port = listener.getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(seen, 10) == 1
    writer.close()
    server.close()
    await server.wait_closed()


def test_a_taken_port_is_an_error_and_leaks_no_socket() -> None:
    first = _listen("127.0.0.1", 0, reuse_port=False)
    try:
        port = first.getsockname()[1]
        try:
            _listen("127.0.0.1", port, reuse_port=False)
        except OSError:
            pass
        else:
            raise AssertionError("a second listener bound a taken port")
    finally:
        first.close()
