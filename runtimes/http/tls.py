"""HTTPS for the HTTP front: the certificate and key files, and a listener that tells TLS from plain HTTP.

The listener accepts connections itself and peeks at the first bytes before any are read: a TLS
ClientHello (record type 0x16) gets a TLS transport over the same socket, so the handshake sees
every byte; anything else is plain HTTP sent to the HTTPS port and is answered `400` in plain
text, naming the right scheme, then closed (a TLS server would otherwise drop it without a word).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from runtimes.http.protocol import Connections, HttpProtocol, render

log = logging.getLogger("runtimes.http")

TLS_HANDSHAKE_RECORD = 0x16
PLAIN_HTTP_ANSWER = render(
    400,
    b'{"error": "this port serves HTTPS: use https:// (plain HTTP was sent to it)"}',
    "application/json",
    None,
    keep_alive=False,
)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer, HTTP/1.1 by ALPN); ValueError saying what is wrong."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise ValueError(f"{flag} {path} is not a file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ValueError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching private key "
            f"({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: cannot read ({exc.strerror or exc})") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsListener:
    """Accepts on one socket, sniffs each connection, and serves TLS ones with `protocol_factory`."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], HttpProtocol],
        connections: Connections,
    ) -> None:
        self.sock = sock
        self.context = context
        self.protocol_factory = protocol_factory
        self.connections = connections
        self.sniffing: dict[int, tuple[socket.socket, float]] = {}  # fd -> (socket, accepted at)
        self._task: asyncio.Task[None] | None = None
        self.handshakes: set[asyncio.Task[None]] = set()

    @classmethod
    def bind(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        protocol_factory: Callable[[], HttpProtocol],
        connections: Connections,
    ) -> TlsListener:
        """Listen on host:port (OSError when it cannot)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock, context, protocol_factory, connections)

    def start(self) -> None:
        """Begin accepting (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._accept_forever())

    def close(self) -> None:
        """Stop accepting; drop connections still being sniffed."""
        if self._task is not None:
            self._task.cancel()
        loop = asyncio.get_running_loop()
        for fd, (conn, _) in list(self.sniffing.items()):
            loop.remove_reader(fd)
            conn.close()
        self.sniffing.clear()
        self.sock.close()

    def sweep(self) -> None:
        """Drop connections that sent nothing within --header-timeout (called with the other sweeps)."""
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for fd, (conn, accepted) in list(self.sniffing.items()):
            if now - accepted > self.connections.limits.header_timeout:
                self.connections.timed_out += 1
                loop.remove_reader(fd)
                del self.sniffing[fd]
                conn.close()

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # out of file descriptors and the like: wait, keep listening
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self.connections.open) + len(self.sniffing) >= self.connections.limits.max_connections:
                self.connections.note_refusal()
                conn.close()  # no TLS yet to carry a 503
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = conn.fileno()
            self.sniffing[fd] = (conn, time.monotonic())
            loop.add_reader(fd, self._sniff, fd)

    def _sniff(self, fd: int) -> None:
        entry = self.sniffing.get(fd)
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        if entry is None:
            return
        del self.sniffing[fd]
        conn = entry[0]
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self.sniffing[fd] = entry  # spurious wake-up: keep waiting
            loop.add_reader(fd, self._sniff, fd)
            return
        except OSError:
            conn.close()
            return
        if not first:  # closed before sending anything
            conn.close()
            return
        if first[0] != TLS_HANDSHAKE_RECORD:
            with contextlib.suppress(OSError):
                conn.send(PLAIN_HTTP_ANSWER)
                conn.shutdown(socket.SHUT_WR)
            # Let the client read the answer before the close (closing with its request unread sends RST).
            loop.call_later(1.0, conn.close)
            return
        task = loop.create_task(self._start_tls(conn))
        self.handshakes.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self.handshakes.discard)

    async def _start_tls(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self.protocol_factory,
                conn,
                ssl=self.context,
                ssl_handshake_timeout=self.connections.limits.header_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake failed: %s", exc)
            conn.close()
