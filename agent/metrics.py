"""`agent run --metrics-port PORT`: the agent's own figures for Prometheus, at `GET /metrics` (off by default).

A few figures read when scraped (outbox backlog, runtimes, desired revision, memory, CPU, the
time since the last message to the hub), written in the text exposition format by hand and
served by a minimal asyncio HTTP responder on the agent's event loop: no web framework and no
metrics library loaded into a process whose memory is the point of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.link.enroll import AGENT_VERSION
from agent.telemetry import rss_bytes

if TYPE_CHECKING:
    from agent.outbox import Outbox
    from agent.reconciler import Reconciler
    from agent.session import HubSession
    from agent.state import AgentState

MAX_REQUEST_HEAD = 8192  # a scraper's GET fits many times over; anything longer is not one
READ_TIMEOUT_S = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class AgentFigures:
    """What one scrape reports; the daemon fills it (`collect` below is its callable)."""

    device: str
    transport: str
    version: str
    uptime_s: float
    desired_revision: int
    outbox_pending: int
    seconds_since_sent: float | None  # None before the first message went out
    runtimes: dict[str, bool] = field(default_factory=dict)  # service -> its process is alive
    rss_bytes: int = 0


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(f: AgentFigures) -> str:
    """The Prometheus text format (0.0.4) for one scrape."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lines = [
        "# HELP edgeport_agent_info The agent: device, transport to the hub, version.",
        "# TYPE edgeport_agent_info gauge",
        f'edgeport_agent_info{{device="{_label(f.device)}",transport="{_label(f.transport)}",'
        f'version="{_label(f.version)}"}} 1',
        "# HELP edgeport_agent_uptime_seconds Seconds since the agent started.",
        "# TYPE edgeport_agent_uptime_seconds gauge",
        f"edgeport_agent_uptime_seconds {f.uptime_s:.3f}",
        "# HELP edgeport_agent_desired_revision The DesiredState revision the agent has taken in.",
        "# TYPE edgeport_agent_desired_revision gauge",
        f"edgeport_agent_desired_revision {f.desired_revision}",
        "# HELP edgeport_agent_outbox_pending_messages Messages in the outbox the hub has not acknowledged.",
        "# TYPE edgeport_agent_outbox_pending_messages gauge",
        f"edgeport_agent_outbox_pending_messages {f.outbox_pending}",
        "# HELP edgeport_agent_runtimes Runtime processes the agent supervises.",
        "# TYPE edgeport_agent_runtimes gauge",
        f"edgeport_agent_runtimes {len(f.runtimes)}",
        "# HELP edgeport_agent_runtime_up Whether a service's runtime process is alive (1) or not (0).",
        "# TYPE edgeport_agent_runtime_up gauge",
        *(f'edgeport_agent_runtime_up{{service="{_label(s)}"}} {int(up)}' for s, up in sorted(f.runtimes.items())),
        "# HELP edgeport_agent_resident_memory_bytes The agent process's resident memory.",
        "# TYPE edgeport_agent_resident_memory_bytes gauge",
        f"edgeport_agent_resident_memory_bytes {f.rss_bytes}",
        "# HELP edgeport_agent_cpu_seconds_total CPU time of the agent process, user and system.",
        "# TYPE edgeport_agent_cpu_seconds_total counter",
        f"edgeport_agent_cpu_seconds_total {usage.ru_utime + usage.ru_stime:.3f}",
    ]
    if f.seconds_since_sent is not None:
        lines += [
            "# HELP edgeport_agent_seconds_since_sent Seconds since the agent last sent the hub a message.",
            "# TYPE edgeport_agent_seconds_since_sent gauge",
            f"edgeport_agent_seconds_since_sent {f.seconds_since_sent:.3f}",
        ]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """`GET /metrics` on HOST:PORT of the running event loop; every other request gets 404 or 405."""

    def __init__(self, collect: Callable[[], AgentFigures]) -> None:
        self.collect = collect
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (PORT 0 picks a free one)."""
        self.server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and wait for the server to close."""
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            method, target = "", ""
        path = target.split("?", 1)[0]
        if path != "/metrics":
            status, body, ctype = "404 Not Found", b"only /metrics here\n", "text/plain; charset=utf-8"
        elif method not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain; charset=utf-8"
        else:
            status, body, ctype = "200 OK", exposition(self.collect()).encode(), CONTENT_TYPE
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + (body if method != "HEAD" else b"")
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve_agent_metrics(
    *,
    device: str,
    transport: str,
    started: float,
    state: AgentState,
    outbox: Outbox,
    reconciler: Reconciler,
    session: HubSession,
    host: str,
    port: int,
    say: Callable[[str], None],
) -> MetricsServer:
    """Start `/metrics` for a running agent's parts on HOST:PORT (`started`: its time.monotonic() start); say where.

    AgentError (exit 2) when the port cannot be had.
    """
    loop = asyncio.get_running_loop()

    def collect() -> AgentFigures:
        return AgentFigures(
            device=device,
            transport=transport,
            version=AGENT_VERSION,
            uptime_s=time.monotonic() - started,
            desired_revision=state.desired().revision,
            outbox_pending=outbox.next_seq() - outbox.first_pending_seq(),
            seconds_since_sent=(loop.time() - session.last_sent) if session.last_sent else None,
            runtimes={name: proc.alive() for name, proc in reconciler.procs.items()},
            rss_bytes=rss_bytes(),
        )

    server = MetricsServer(collect)
    try:
        bound = await server.start(host, port)
    except OSError as exc:  # in use, or an address this machine does not have
        raise AgentError(f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}", 2) from None
    say(f"metrics: http://{host}:{bound}/metrics")
    return server
