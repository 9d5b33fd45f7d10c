"""The port reservation of ``serve --workers``: the supervisor's bound, never listening
SO_REUSEPORT socket keeps the port from every other program, lets the workers (SO_REUSEPORT too)
bind and listen on it, and takes no connection itself."""

from __future__ import annotations

import socket

import pytest

from cloud._workers import reserve_port


def _reuseport_listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    return s


def test_workers_bind_the_reserved_port_and_others_cannot() -> None:
    with reserve_port("127.0.0.1", 0) as held:
        port = held.getsockname()[1]
        with _reuseport_listener(port) as a, _reuseport_listener(port) as b:
            with socket.socket() as intruder, pytest.raises(OSError):
                intruder.bind(("127.0.0.1", port))  # no SO_REUSEPORT: refused
            accepted = 0
            for _ in range(6):  # every connection reaches a listening worker, none the holder
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    pass
            for listener in (a, b):
                listener.setblocking(False)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.close()
                    accepted += 1
            assert accepted == 6


def test_a_port_in_use_without_reuseport_cannot_be_reserved() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", other.getsockname()[1])
