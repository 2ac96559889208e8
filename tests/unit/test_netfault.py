"""simulators.netfault: a real TCP proxy in front of a real echo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from simulators.netfault import FaultCommandError, FaultProxy, parse_schedule
from simulators.netfault_control import ControlServer, ThreadedFaultProxy, send_command
from tests.support import PYTHON, REPO


class _EchoServer:
    """An echo server whose connection handlers can be ended before its loop closes (otherwise a handler
    left pending is finalized later, on a closed loop, and pytest reports the error it raises)."""

    def __init__(self, server: asyncio.Server, handlers: set[asyncio.Task[None]]) -> None:
        self.server, self.handlers = server, handlers
        self.port: int = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


async def _echo_server() -> _EchoServer:
    handlers: set[asyncio.Task[None]] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            handlers.discard(task)

    return _EchoServer(await asyncio.start_server(echo, "127.0.0.1", 0), handlers)


def _run(test: Callable[[FaultProxy], Awaitable[None]]) -> None:
    async def main() -> None:
        server = await _echo_server()
        proxy = FaultProxy(("127.0.0.1", server.port))
        await proxy.start()
        try:
            await asyncio.wait_for(test(proxy), 20)
        finally:
            await proxy.stop()
            await server.close()

    asyncio.run(main())


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await reader.readexactly(len(payload))


def test_bytes_pass_through_unchanged_both_ways() -> None:
    async def check(proxy: FaultProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        payload = bytes(range(256)) * 4096  # 1 MiB, several chunks
        assert await _roundtrip(reader, writer, payload) == payload
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(payload)
        writer.close()

    _run(check)


def test_latency_delays_each_direction_and_keeps_order() -> None:
    async def check(proxy: FaultProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await _roundtrip(reader, writer, b"warm")
        proxy.set_latency(100, jitter_ms=30)
        start = time.monotonic()
        messages = [f"{i:04d}".encode() for i in range(50)]
        for m in messages:
            writer.write(m)
        got = await reader.readexactly(4 * len(messages))
        elapsed = time.monotonic() - start
        assert got == b"".join(messages)  # jitter never reorders a TCP stream
        assert 0.2 <= elapsed < 2.0  # 100 ms up + 100 ms down at least
        writer.close()

    _run(check)


def test_drop_holds_bytes_and_restore_delivers_them_intact() -> None:
    async def check(proxy: FaultProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await _roundtrip(reader, writer, b"before")
        proxy.drop()
        writer.write(b"during the outage")
        await writer.drain()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        assert proxy.connections == 1  # a blackhole does not close sockets
        await proxy.restore()
        assert await asyncio.wait_for(reader.readexactly(17), 5) == b"during the outage"
        writer.close()

    _run(check)


def test_cut_closes_connections_and_refuses_new_ones_until_restore() -> None:
    async def check(proxy: FaultProxy) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        await _roundtrip(reader, writer, b"hello")
        proxy.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(_roundtrip(reader, writer, b"more"), 5)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", proxy.port)
        await proxy.restore()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await _roundtrip(reader, writer, b"again") == b"again"
        assert proxy.stats.closed_by_cut == 1
        writer.close()

    _run(check)


def test_a_schedule_cuts_and_restores_on_time() -> None:
    async def check(proxy: FaultProxy) -> None:
        modes = []
        proxy.run_schedule([(0.1, "cut"), (0.4, "restore")])
        for _ in range(10):
            await asyncio.sleep(0.05)
            modes.append(proxy.state.mode)
        assert "cut" in modes and modes[-1] == "pass"
        assert [e for _, e in proxy.stats.events] == ["cut", "restore"]

    _run(check)


def test_schedule_text_is_parsed_and_bad_entries_named() -> None:
    assert parse_schedule("10:cut, 40:restore,45:latency 200 50") == [
        (10.0, "cut"), (40.0, "restore"), (45.0, "latency 200 50")
    ]
    with pytest.raises(FaultCommandError, match="'soon:cut'"):
        parse_schedule("soon:cut")
    with pytest.raises(FaultCommandError, match="'explode'"):
        parse_schedule("3:explode")


def test_the_proxy_refuses_a_target_off_loopback() -> None:
    with pytest.raises(FaultCommandError, match=r"127\.0\.0\.1"):
        FaultProxy(("10.0.0.1", 80))


def test_control_socket_runs_commands_and_names_a_bad_one() -> None:
    async def check(proxy: FaultProxy) -> None:
        control = ControlServer(proxy)
        port = await control.start()
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, send_command, port, "latency 50 5")
        assert reply["ok"] and reply["latency_ms"] == 50 and reply["jitter_ms"] == 5
        reply = await loop.run_in_executor(None, send_command, port, "cut")
        assert reply["mode"] == "cut"
        reply = await loop.run_in_executor(None, send_command, port, "latency fast")
        assert not reply["ok"] and "whole milliseconds" in reply["error"]
        reply = await loop.run_in_executor(None, send_command, port, "explode")
        assert not reply["ok"] and "unknown command 'explode'" in reply["error"]
        await control.stop()

    _run(check)


def test_threaded_proxy_serves_synchronous_tests() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(_echo_server(), loop).result(5)
    port = server.port
    try:
        with ThreadedFaultProxy(("127.0.0.1", port)) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"
                proxy.cut()
                s.settimeout(5)
                with contextlib.suppress(ConnectionResetError):  # closed by the cut: EOF or reset, no hang
                    assert s.recv(4) == b""
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            proxy.restore()
            assert proxy.status()["mode"] == "pass"
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"pong")
                assert s.recv(4) == b"pong"
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--target", "127.0.0.1:1", "--schedule", "x:cut"], "bad schedule entry 'x:cut'"),
        (["serve", "--target", "127.0.0.1:1", "--profile", "toaster"], "unknown device profile 'toaster'"),
        (["serve", "--target", "10.1.1.1:80"], "must be on 127.0.0.1"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    done = subprocess.run([PYTHON, "-m", "simulators", "netfault", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_send_to_nothing_fails_with_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([PYTHON, "-m", "simulators", "netfault", "send", "--control-port", str(port), "status"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "error: netfault" in done.stderr and "Traceback" not in done.stderr
