"""RegistryClient: blob GETs from OCI registries, on the agent's event loop.

Pulls used to run urllib in the thread pool. With many agents on one loop (a simulated
fleet, or one agent pulling while its link is busy) each pull then waited for the GIL after
every socket and file call, so a thread's pull took tens of milliseconds for a few kilobytes
and a fleet's deploy was paced by its pulls. Here a pull is an HTTP/1.1 exchange on asyncio
streams, parsed by httptools (the runtime's HTTP parser already), with keep-alive
connections kept per registry and at most `max_connections` of them open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

READ_BYTES = 64 * 1024
MAX_CONNECTIONS = 8  # per registry: what HTTP clients usually allow one host
IDLE_S = 4.0  # an idle connection is reused only this long (below uvicorn's 5 s keep-alive)
ERROR_BODY_BYTES = 2000


class RegistryUnreachable(Exception):
    """The exchange failed on the network (refused, cut, timed out); trying again later may work."""


@dataclass
class Response:
    """Status and headers of a response whose body went to the caller's `on_body`; `error_body` holds the
    first bytes of a body that was not 200/206 (for the error message)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error_body: bytes = b""


class _Exchange:
    """httptools callbacks for one response."""

    def __init__(self, on_body: Callable[[bytes, int], None]) -> None:
        self.response = Response()
        self.parser = httptools.HttpResponseParser(self)
        self._on_body = on_body
        self.headers_done = False
        self.keep_alive = False
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.response.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # read here: the parser resets after the message
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if self.response.status in (200, 206):
            self._on_body(body, self.response.status)
        elif len(self.response.error_body) < ERROR_BODY_BYTES:
            self.response.error_body += body[: ERROR_BODY_BYTES - len(self.response.error_body)]

    def on_message_complete(self) -> None:
        self.done = True

    def close_delimited(self) -> bool:
        """Whether the body runs to the end of the connection (an HTTP/1.0-style answer without a length)."""
        headers = self.response.headers
        return self.headers_done and "content-length" not in headers and "transfer-encoding" not in headers


@dataclass
class _Host:
    """The connections of one registry, on one event loop."""

    loop: asyncio.AbstractEventLoop
    gate: asyncio.Semaphore
    idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)


class RegistryClient:
    """GETs from registries with keep-alive connections, shared by every cache (agent) on one loop."""

    def __init__(self, timeout_s: float = 30.0, max_connections: int = MAX_CONNECTIONS) -> None:
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._hosts: dict[tuple[str, str], _Host] = {}
        self._trusted: set[bytes] = set()  # extra CA certificates (PEM) https pulls accept
        self._tls: ssl.SSLContext | None = None  # built on the first https pull, again after trust_ca

    def trust_ca(self, ca_pem: bytes) -> None:
        """Also accept https registries whose certificate chains to `ca_pem` (the hub CA pinned at enrollment);
        the system's CAs stay trusted too, for an external registry or CDN."""
        if ca_pem and ca_pem not in self._trusted:
            self._trusted.add(ca_pem)
            self._tls = None

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context()
            for pem in sorted(self._trusted):
                context.load_verify_locations(cadata=pem.decode("ascii"))
            self._tls = context
        return self._tls

    def _host(self, scheme: str, netloc: str) -> _Host:
        loop = asyncio.get_running_loop()
        host = self._hosts.get((scheme, netloc))
        if host is None or host.loop is not loop:  # first use, or a new loop (tests): old connections are dead
            host = _Host(loop, asyncio.Semaphore(self.max_connections))
            self._hosts[(scheme, netloc)] = host
        return host

    async def get(
        self, url: str, on_body: Callable[[bytes, int], None], headers: dict[str, str] | None = None
    ) -> Response:
        """GET `url`; the body of a 200 or 206 goes to `on_body(piece, status)` piece by piece as it arrives.

        Raises RegistryUnreachable when the network fails; `on_body` may have had part of the body then.
        """
        parts = urllib.parse.urlsplit(url)
        scheme, netloc = parts.scheme or "http", parts.netloc
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {netloc}", "User-Agent: edgeport-agent", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        host = self._host(scheme, netloc)
        async with host.gate:
            fresh = False
            while True:
                reader, writer, reused = await self._connection(host, scheme, parts, fresh)
                try:
                    return await self._exchange(host, reader, writer, request, on_body)
                except _StaleConnection:
                    if not reused:
                        raise RegistryUnreachable(f"{netloc} closed the connection before answering") from None
                fresh = True  # the server closed the idle connection just as we picked it: once more, on a new one

    async def _connection(
        self, host: _Host, scheme: str, parts: urllib.parse.SplitResult, fresh: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while host.idle and not fresh:
            since, reader, writer = host.idle.pop()
            if now - since < IDLE_S and not reader.at_eof():
                return reader, writer, True
            writer.close()
        port = parts.port or (443 if scheme == "https" else 80)
        context = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context, limit=READ_BYTES)
        except (OSError, TimeoutError) as exc:
            raise RegistryUnreachable(f"cannot connect to {parts.netloc}: {exc or 'timed out'}") from None
        return reader, writer, False

    async def _exchange(
        self,
        host: _Host,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        on_body: Callable[[bytes, int], None],
    ) -> Response:
        exchange = _Exchange(on_body)
        got_any = False
        keep = False
        try:
            writer.write(request)
            while not exchange.done:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        data = await reader.read(READ_BYTES)
                except TimeoutError:
                    raise RegistryUnreachable(f"no answer for {self.timeout_s:g}s") from None
                if not data:
                    if not got_any:
                        raise _StaleConnection()
                    if exchange.close_delimited():  # no length given: the body ends with the connection
                        return exchange.response
                    raise RegistryUnreachable("the connection closed in the middle of the answer")
                got_any = True
                try:
                    exchange.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise RegistryUnreachable(f"malformed HTTP answer: {exc}") from None
            keep = exchange.keep_alive
            return exchange.response
        except ConnectionError as exc:
            if not got_any:
                raise _StaleConnection() from None
            raise RegistryUnreachable(f"the connection failed in the middle of the answer: {exc}") from None
        except OSError as exc:
            raise RegistryUnreachable(str(exc)) from None
        finally:
            if keep:
                host.idle.append((time.monotonic(), reader, writer))
            else:
                writer.close()

    def close(self) -> None:
        """Close every idle connection (the pool is otherwise left to the process exit)."""
        for host in self._hosts.values():
            for _, _, writer in host.idle:
                with contextlib.suppress(RuntimeError):  # its loop may be closed already
                    writer.close()
            host.idle.clear()


class _StaleConnection(Exception):
    """The connection ended before any byte of the answer (a pooled one the server had closed)."""
