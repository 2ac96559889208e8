"""Whether a runtime on this machine answers: health probes, and the ports runtimes listen on.

The runtime contract's "Healthy" is GET / answering 200; the agent asks over plain HTTP or, for a runtime
serving TLS, over HTTPS without verifying (it gave that runtime its certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on `port` (connections in TIME_WAIT do not count, as for servers)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def local_tls_context() -> ssl.SSLContext:
    """TLS for the agent's own calls to a runtime it started on this machine (health, metrics, profiling): the
    point is whether it answers, not who it is (the agent gave it its certificate), so nothing is verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_healthy(port: int, host: str = "127.0.0.1", timeout: float = 2.0, *, tls: bool = False) -> bool:
    """GET / on the runtime answers 200 (the runtime contract's 'Healthy'); `tls`: over HTTPS."""
    target = host if host != "0.0.0.0" else "127.0.0.1"
    conn = (
        http.client.HTTPSConnection(target, port, timeout=timeout, context=local_tls_context())
        if tls
        else http.client.HTTPConnection(target, port, timeout=timeout)
    )
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read(200)
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


async def probe_healthy(port: int, host: str = "127.0.0.1", timeout: float = 2.0, *, tls: bool = False) -> bool:
    """check_healthy on the event loop (no worker thread: those may all be busy pulling blobs)."""
    target = host if host != "0.0.0.0" else "127.0.0.1"
    writer = None
    try:
        context = local_tls_context() if tls else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(target, port, ssl=context), timeout)
        writer.write(f"GET / HTTP/1.1\r\nHost: {target}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
