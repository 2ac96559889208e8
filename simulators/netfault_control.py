"""Controlling a FaultProxy (simulators/netfault.py) from outside its event loop.

`ControlServer` takes the proxy's text commands on a line-based socket on 127.0.0.1 and answers
each with one JSON line (`python -m simulators netfault send` is its client, `send_command`);
`ThreadedFaultProxy` runs a proxy on its own loop in a thread, with blocking methods, for
synchronous tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading

from simulators.netfault import LOOPBACK, FaultCommandError, FaultProxy


class ControlServer:
    """A line-based control socket on 127.0.0.1: one command per line, one JSON status (or error) back."""

    def __init__(self, proxy: FaultProxy, port: int = 0) -> None:
        self.proxy = proxy
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen and return the control port."""
        self._server = await asyncio.start_server(self._serve, LOOPBACK, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := (await reader.readline()).decode(errors="replace"):
                try:
                    reply: dict = {"ok": True, **(await self.proxy.command(line))}
                except FaultCommandError as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            self._server = None


def send_command(control_port: int, line: str, timeout: float = 5.0) -> dict:
    """Send one command to a ControlServer and return its JSON reply (blocking; for CLIs and tests)."""
    with socket.create_connection((LOOPBACK, control_port), timeout=timeout) as sock:
        sock.sendall(line.strip().encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class ThreadedFaultProxy:
    """A FaultProxy on its own event loop in a daemon thread, with blocking methods (synchronous tests)."""

    def __init__(self, target: tuple[str, int], *, listen_port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netfault", daemon=True)
        self._thread.start()
        self.proxy: FaultProxy = self._call(self._make(target, listen_port))
        self.port: int = self._call(self.proxy.start())

    @staticmethod
    async def _make(target: tuple[str, int], listen_port: int) -> FaultProxy:
        return FaultProxy(target, listen_port=listen_port)  # built inside the loop that will use its Event

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def command(self, line: str) -> dict:
        """Run one text command (see FaultProxy.command) and return the status."""
        return self._call(self.proxy.command(line))

    def cut(self) -> None:
        """Close every connection and refuse new ones."""
        self.command("cut")

    def drop(self) -> None:
        """Blackhole the link."""
        self.command("drop")

    def restore(self) -> None:
        """Back to a working link."""
        self.command("restore")

    def set_latency(self, latency_ms: int, jitter_ms: int = 0) -> None:
        """Delay every chunk."""
        self.command(f"latency {latency_ms} {jitter_ms}")

    def status(self) -> dict:
        """Link state and counters."""
        return self.command("status")

    def close(self) -> None:
        """Stop the proxy and its thread."""
        with contextlib.suppress(Exception):
            self._call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> ThreadedFaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
