"""`hub serve`: the hub's composition root and its run loop.

`build_hub` constructs, in order, every service (`HubServices.open`) and every component that
runs next to the HTTP API (the agents' gRPC channel, the MQTT bridge when configured) from one
typed `HubConfig`; `run_hub` starts them in that order in one asyncio loop, serves until
SIGTERM/SIGINT, and stops them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import uvicorn

from hub import collector, event_loop
from hub.access import ADMIN_TOKEN_FILE
from hub.api.app import create_app
from hub.control.channel import AgentChannel
from hub.control.mqtt_bridge import MqttBridge
from hub.errors import BadInput, HubError
from hub.serve_config import HubConfig, advertised_host
from hub.services import HubServices

log = logging.getLogger("hub.server")


class Component(Protocol):
    """Something `hub serve` runs next to the HTTP API (optionally with a `url` for the ready line)."""

    async def start(self) -> None:
        """Start serving (return once ready)."""

    async def stop(self) -> None:
        """Stop and release everything."""


@dataclass
class Hub:
    """One hub, fully built and not yet started: its services and its components in start order."""

    config: HubConfig
    services: HubServices
    components: list[Component] = field(default_factory=list)


def build_hub(config: HubConfig) -> Hub:
    """Open the data dir, build every service, then every component `config` enables (nothing started yet).

    DataDirLocked (exit 2) when another hub holds the data dir; the data dir is released on any failure.
    """
    services = HubServices.open(config.data_dir, config.agents, config.blob_gc)
    try:
        components: list[Component] = [
            AgentChannel(
                services,
                host=config.host,
                api_port=config.port,
                grpc_port=config.agents.grpc_port,
                insecure=config.agents.insecure,
                artifact_url=config.agents.artifact_url,
                api_scheme="https" if config.https else "http",
            )
        ]
        components.append(services.blob_collector)
        if config.mqtt is not None:
            bridge = functools.partial(
                MqttBridge,
                services,
                config.mqtt.url,
                directory=config.mqtt.directory or config.data_dir / "mqtt",
                advertise=config.mqtt.advertise,
                run_broker=config.mqtt.run_broker,
                insecure=config.agents.insecure,
            )
            # No prefix given: the bridge's default, the protocol's topic prefix.
            components.append(bridge() if config.mqtt.prefix is None else bridge(prefix=config.mqtt.prefix))
    except BaseException:
        services.close()
        raise
    return Hub(config, services, components)


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


def _tls_files(config: HubConfig, services: HubServices) -> tuple[str | None, str | None]:
    """uvicorn's TLS settings: the user's certificate, or one the hub CA issues (kept in DATA_DIR/pki) for
    the listen address, this machine's name and every --tls-san: (certificate, key), both None on plain HTTP."""
    if not config.https:
        return None, None
    if config.tls_cert is not None and config.tls_key is not None:
        try:  # here, so a wrong file is one line naming the options, not a traceback from uvicorn
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(config.tls_cert, config.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise BadInput(f"--tls-cert {config.tls_cert} / --tls-key {config.tls_key}: cannot serve TLS with "
                           f"them: {exc}") from None  # fmt: skip
        return str(config.tls_cert), str(config.tls_key)
    ca = services.fleet.ca
    ca.server_credentials([advertised_host(config.host), *config.tls_sans])  # the gRPC port's too: one hub
    return str(ca.dir / "server.crt"), str(ca.dir / "server.key")


async def run_hub(config: HubConfig) -> None:
    """Build the hub, start the API and every component, serve until SIGTERM/SIGINT, then stop all."""
    hub = build_hub(config)
    started: list[Component] = []
    try:
        sock = _listen(config.host, config.port)
        scheme = "https" if config.https else "http"
        if config.plain_on_network:  # said at every start, so nobody forgets the hub runs this way
            log.warning("--insecure: the API on %s serves plain HTTP and the agents' gRPC is plain text, so API "
                        "tokens cross the network in the clear and devices are taken at their word; use it only "
                        "on a network you trust", config.host)  # fmt: skip
        port = sock.getsockname()[1]
        hub.services.access.audit_retention_s = config.audit_retention_s
        hub.services.access.trim()  # what outlived the retention while the hub was down
        # Before anything answers, so whoever sees the hub up finds DATA_DIR/admin.token in place.
        admin_token = hub.services.access.ensure_admin_token()
        if admin_token is not None:  # a new data dir (or no admin token left): shown this once
            token_file = config.data_dir / ADMIN_TOKEN_FILE
            # Over https the name must be one the certificate carries: not a bind-to-all address.
            login_host = advertised_host(config.host) if config.https else config.host
            print(
                f"admin API token (shown once; also in {token_file}, mode 0600): {admin_token}\n"
                f"  use it: hub login --hub {scheme}://{login_host}:{port} --token $(cat {token_file})"
                + (f" --ca-fingerprint {hub.services.fleet.ca.ca_sha256}" if config.https else ""),
                flush=True,
            )
        cert_file, key_file = _tls_files(config, hub.services)
        uvicorn_config = uvicorn.Config(
            create_app(hub.services),
            log_level="warning",
            access_log=config.access_log,
            lifespan="off",
            timeout_graceful_shutdown=5,
            ssl_certfile=cert_file,
            ssl_keyfile=key_file,
        )
        server = _EmbeddedUvicorn(uvicorn_config)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for component in hub.components:
            try:
                await component.start()
            except OSError as exc:  # a busy port, a missing file: one line, not a traceback
                raise HubError(f"cannot start {type(component).__name__}: {exc.strerror or exc}") from None
            started.append(component)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if serving.done():
                serving.result()  # raise whatever stopped it
                raise HubError("the HTTP server stopped during startup")
            await asyncio.sleep(0.02)
        collector.settle()  # everything started: what exists now lives as long as the hub
        base = f"{scheme}://{config.host}:{port}"
        extras = "".join(f", {getattr(c, 'url', '')}" for c in started if getattr(c, "url", ""))
        if config.https:  # what `hub login --ca-fingerprint` and enrollment tokens pin
            extras += f"; hub CA sha256:{hub.services.fleet.ca.ca_sha256}"
        print(
            f"hub serving {base} (API {base}/api/v1, OCI {config.host}:{port}/v2/{extras}; data {config.data_dir})",
            flush=True,
        )
        await asyncio.wait({serving, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        for component in reversed(started):
            try:
                await component.stop()
            except Exception:  # keep stopping the others; the process is ending anyway
                log.exception("stopping %r failed", component)
        hub.services.close()
    print("hub stopped", flush=True)


def serve(config: HubConfig) -> int:
    """Run the hub in the foreground; returns the exit code (HubError propagates to the CLI)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    event_loop.run(run_hub(config))
    return 0
