"""The MQTT link's loop driver writes a client's queued packets once per loop turn, and watches the socket for
writability only when the kernel buffer is full."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from agent.link.mqtt import _LoopDriver


class _FakeClient:
    def __init__(self, sock: socket.socket, full: bool = False) -> None:
        self.sock, self.full, self.writes = sock, full, 0

    def socket(self) -> socket.socket:
        return self.sock

    def loop_write(self) -> None:
        self.writes += 1

    def want_write(self) -> bool:
        return self.full


def test_publishes_of_one_turn_are_written_together_without_watching_the_socket() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        driver = _LoopDriver(loop)
        a, b = socket.socketpair()
        try:
            client: Any = _FakeClient(a)
            watched: list[Any] = []
            loop.add_writer = lambda sock, cb: watched.append(sock)  # type: ignore[method-assign]
            for _ in range(5):  # five publishes in one turn: paho asks to register the write each time
                driver._on_register_write(client, None, a)
            assert client.writes == 0
            await asyncio.sleep(0)
            assert client.writes == 1 and watched == []
            full: Any = _FakeClient(a, full=True)  # the kernel buffer filled up: wait for writability
            driver._on_register_write(full, None, a)
            await asyncio.sleep(0)
            assert full.writes == 1 and watched == [a]
            gone: Any = _FakeClient(a)  # closed before the turn came: nothing written
            driver._on_register_write(gone, None, a)
            gone.sock = None
            await asyncio.sleep(0)
            assert gone.writes == 0
        finally:
            a.close()
            b.close()

    asyncio.run(scenario())
