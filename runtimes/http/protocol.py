"""HTTP/1.1 on httptools' parser as a bare asyncio Protocol (uvloop), built for small-request latency.

Why not uvicorn/Starlette: at ~10 µs of model time per request, an ASGI stack's per-request
allocations and task switches dominate. Here a request whose handler answers synchronously is
parsed, dispatched and written inside one `data_received` call, with no task. Handlers that must
wait (model on a worker thread, batching, entry scripts) return a coroutine; the connection then
stops reading until it is answered, so pipelined requests keep their order.

Bodies: Content-Length above the cap gets 413 before the body is read (and the connection is
closed); a chunked body is counted as it arrives and cut off the same way. The request line and
headers are bounded too: a URL over MAX_URL_BYTES gets 414, a head over MAX_HEAD_BYTES or with
more than MAX_HEADERS fields gets 431 (httptools itself buffers a header without limit).

What one client can hold (HttpLimits): a request line and headers must arrive within
`header_timeout` of their first byte (else 408 and close: slowloris); a connection that sends
nothing for `idle_timeout` is closed (408 first when it stopped inside a body); past
`max_connections` open connections a new one gets 503 and is closed, the others unaffected.
A sweep every second enforces the timeouts, so the request path pays only a clock read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger("runtimes.http")

MAX_URL_BYTES = 8192
MAX_HEAD_BYTES = 65536
MAX_HEADERS = 128
PREALLOCATE_OVER = 1 << 16  # bodies announced larger than this are received into one preallocated buffer
LINGER_S = 1.0  # how long a refused request's connection keeps draining before it is closed

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """`HTTP/1.1 <code> <reason>\\r\\n`, cached."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()
    return line


def render(
    status: int,
    body: bytes,
    content_type: str,
    headers: list[tuple[str, str]] | None,
    keep_alive: bool,
    head_only: bool = False,
) -> bytes:
    """The full response bytes (`head_only`: a HEAD answer, with the length the body would have)."""
    head = [
        status_line(status),
        b"content-type: ",
        content_type.encode("latin-1"),
        b"\r\ncontent-length: ",
        str(len(body)).encode(),
    ]
    if headers:
        for k, v in headers:
            head.append(f"\r\n{k}: {v}".encode("latin-1"))
    head.append(b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n")
    if not head_only:
        head.append(body)
    return b"".join(head)


class Request:
    """One parsed request; header names are lower-case."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes | bytearray,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


Handler = Callable[[Request], "bytes | Coroutine[Any, Any, bytes]"]


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost the HTTP front (the `serve` flags of the same names)."""

    max_body_bytes: int = 100 * 2**20
    header_timeout: float = 15.0
    idle_timeout: float = 60.0
    max_connections: int = 1024


@dataclass
class Connections:
    """The open connections of one HTTP front, the limits they share, and the sweep enforcing them."""

    limits: HttpLimits
    open: set[HttpProtocol] = field(default_factory=set)
    refused: int = 0  # connections turned away at the cap
    timed_out: int = 0  # connections closed by a timeout
    also_sweep: list[Callable[[], None]] = field(default_factory=list)  # e.g. the TLS listener's sniffing
    _last_refusal_log: float = 0.0

    def sweep(self) -> None:
        """Close what overstayed a timeout (called about once a second)."""
        now = time.monotonic()
        for conn in list(self.open):
            conn.check_timeouts(now)
        for extra in self.also_sweep:
            extra()

    async def sweep_forever(self, interval: float = 1.0) -> None:
        """Run `sweep` every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def note_refusal(self) -> None:
        """Count a connection refused at the cap; log at most every 10 s."""
        self.refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log > 10.0:
            self._last_refusal_log = now
            log.warning(
                "refusing connections: %d open, the --max-connections cap (%d refused so far)",
                len(self.open),
                self.refused,
            )


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, connections: Connections) -> None:
        self.handler = handler
        self.table = connections
        self.limits = connections.limits
        self.max_body = connections.limits.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Request] = deque()
        self.busy = False
        self.closing = False
        self.in_head = True  # between requests or inside a request line/headers
        self.head_bytes = 0  # bytes received while in_head: bounds what httptools buffers
        self.head_started: float | None = None  # when the first byte of the current head arrived
        self.last_read = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.buffer: bytearray | None = None  # a large body of known length, filled in place
        self.size = 0
        self.too_large = False
        self.refused: tuple[int, str] | None = None  # (status, message) for a head over its limits

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.table.open) >= self.limits.max_connections:
            self.table.note_refusal()
            self._fail(503, f"too many connections: this runtime serves at most {self.limits.max_connections} at once")
            return
        self.table.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.table.open.discard(self)

    def check_timeouts(self, now: float) -> None:
        """Close the connection if it overstayed the header or idle timeout (the sweep calls this)."""
        if self.closing or self.busy:  # a request being answered is the model's time, not the client's
            return
        started = self.head_started
        if started is not None and now - started > self.limits.header_timeout:
            self.table.timed_out += 1
            self._fail(408, f"request line and headers not received within {self.limits.header_timeout:g} s")
        elif now - self.last_read > self.limits.idle_timeout:
            self.table.timed_out += 1
            if self.in_head and started is None:  # between requests: nothing to answer
                self._close()
            else:
                self._fail(408, f"no request data for {self.limits.idle_timeout:g} s")

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_read = time.monotonic()
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.refused is None and self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self.refused = 431, f"request line and headers are over {MAX_HEAD_BYTES} bytes"
        if self.refused is not None:
            self._fail(*self.refused)
            return
        if self.too_large:
            self._fail(413, f"request body is larger than the {self.max_body}-byte limit (--max-body-bytes)")
            return
        self._drain()

    # httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self.in_head = True
        self.head_started = self.last_read

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > MAX_URL_BYTES:
            self.refused = self.refused or (414, f"the URL is over {MAX_URL_BYTES} bytes")
            return
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            self.refused = self.refused or (431, f"more than {MAX_HEADERS} header fields")
            return
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.head_started = None
        if self.refused is not None:
            return
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self.too_large = True  # answered after feed_data returns; the body is never read
            return
        if length is not None and length.isdigit() and int(length) > PREALLOCATE_OVER:
            # One buffer of the announced size: joining chunks would hold the body twice at once.
            self.buffer = bytearray(int(length))
        if self.headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.too_large:
            return
        start = self.size
        self.size += len(body)
        if self.size > self.max_body:
            self.too_large = True
            self.chunks = []
            self.buffer = None
            return
        if self.buffer is not None and self.size <= len(self.buffer):
            self.buffer[start : self.size] = body
        else:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.in_head = True  # what follows is the next request's head
        if self.too_large or self.refused is not None:
            return
        path, _, query = self.url.partition(b"?")
        chunks, buffer = self.chunks, self.buffer
        self.chunks, self.buffer = [], None
        # a preallocated bytearray is bytes-like everywhere the body goes: no copy
        body: bytes | bytearray = buffer if buffer is not None else chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.queue.append(
            Request(
                self.parser.get_method().decode("latin-1"),
                path.decode("latin-1"),
                query.decode("latin-1"),
                self.headers,
                body,
                self.parser.should_keep_alive(),
            )
        )

    # dispatch --------------------------------------------------------------------------------
    def _drain(self) -> None:
        transport = self.transport
        while self.queue and not self.busy and not self.closing and transport is not None:
            req = self.queue.popleft()
            result = self.handler(req)
            if isinstance(result, bytes):
                transport.write(result)
                if not req.keep_alive:
                    self._close()
            else:
                self.busy = True
                transport.pause_reading()
                asyncio.get_running_loop().create_task(self._finish(req, result))

    async def _finish(self, req: Request, pending: Coroutine[Any, Any, bytes]) -> None:
        data = await pending  # the handler turns every error into a response
        self.busy = False
        self.last_read = time.monotonic()  # the idle timeout counts from the answer
        if self.closing or self.transport is None:
            return
        self.transport.write(data)
        if not req.keep_alive:
            self._close()
            return
        self.transport.resume_reading()
        self._drain()

    def _fail(self, status: int, message: str) -> None:
        transport = self.transport
        if transport is None or self.closing:
            self._close()
            return
        body = f'{{"error": {_json_str(message)}}}'.encode()
        transport.write(render(status, body, "application/json", None, keep_alive=False))
        self.closing = True
        if transport.can_write_eof():
            # Lingering close: send FIN after the answer and discard what the client still sends for
            # a moment; closing at once with unread data makes the kernel send RST, which can
            # destroy the answer before the client reads it.
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        else:
            transport.close()

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


def _json_str(text: str) -> str:
    import json

    return json.dumps(text)
