"""`hub serve`: uvicorn (REST + OCI) and other rooms' components in one asyncio loop, stopped cleanly on signals.

Components are objects with `async start()` / `async stop()` (and optionally a
`url` shown on the ready line): the gRPC agent channel, the MQTT bridge. Rooms
register a factory in `COMPONENT_FACTORIES`; it receives the services and the
parsed `hub serve` arguments and returns a component, or None when not enabled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import uvicorn

from agent import event_loop
from hub import collector
from hub.api.app import create_app
from hub.control.channel import agent_channel
from hub.control.mqtt_bridge import mqtt_bridge
from hub.errors import HubError
from hub.services import HubServices

log = logging.getLogger("hub.server")


class Component(Protocol):
    """Something `hub serve` runs next to the HTTP API."""

    async def start(self) -> None:
        """Start serving (return once ready)."""

    async def stop(self) -> None:
        """Stop and release everything."""


ComponentFactory = Callable[[HubServices, argparse.Namespace], Component | None]
# Rooms append factories here (room 4: the gRPC AgentService; room 5: the MQTT bridge).
COMPONENT_FACTORIES: list[ComponentFactory] = [agent_channel, mqtt_bridge]


@dataclass
class ServeOptions:
    """Where the hub keeps its state and listens."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7070
    access_log: bool = False


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn that leaves signal handling to `run_hub`, which also stops the other components."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    # Bind ourselves so a busy port is a clear one-line error instead of a uvicorn log + exit.
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without it
        # every keep-alive response (headers and body written separately) waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as exc:
        reason = (exc.strerror or str(exc)).split(" (while")[0]
        raise HubError(f"cannot listen on {host}:{port}: {reason}") from None


async def run_hub(options: ServeOptions, args: argparse.Namespace) -> None:
    """Open the data dir, start the API and every component, serve until SIGTERM/SIGINT, then stop all."""
    services = HubServices.open(options.data_dir)  # DataDirLocked (exit 2) when another hub holds it
    components: list[Component] = []
    try:
        sock = _listen(options.host, options.port)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(services),
            log_level="warning",
            access_log=options.access_log,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = _EmbeddedUvicorn(config)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for factory in COMPONENT_FACTORIES:
            component = factory(services, args)
            if component is not None:
                try:
                    await component.start()
                except OSError as exc:  # a busy port, a missing file: one line, not a traceback
                    raise HubError(f"cannot start {type(component).__name__}: {exc.strerror or exc}") from None
                components.append(component)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()  # raise whatever stopped it
                raise HubError("the HTTP server stopped during startup")
            await asyncio.sleep(0.02)
        collector.settle()  # everything started: what exists now lives as long as the hub
        base = f"http://{options.host}:{port}"
        extras = "".join(f", {getattr(c, 'url', '')}" for c in components if getattr(c, "url", ""))
        print(
            f"hub serving {base} (API {base}/api/v1, OCI {options.host}:{port}/v2/{extras}; data {options.data_dir})",
            flush=True,
        )
        await asyncio.wait({serving, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        for component in reversed(components):
            try:
                await component.stop()
            except Exception:  # keep stopping the others; the process is ending anyway
                log.exception("stopping %r failed", component)
        services.close()
    print("hub stopped", flush=True)


def serve(options: ServeOptions, args: argparse.Namespace) -> int:
    """Run the hub in the foreground; returns the exit code (HubError propagates to the CLI)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    event_loop.run(run_hub(options, args))
    return 0
