"""Fixtures for the MQTT tests: a real mosquitto on a free loopback port, a hub bridged to it, in-process fleets."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hub.control.mqtt_auth import BrokerAuth
from hub.control.mqtt_broker import MosquittoBroker
from protos.mqtt.topics import Topics
from simulators.fleet import FleetOptions, SimulatedFleet
from tests.integration.registry_support import api_get, cli_env, hub_token, remember_hub
from tests.support import PYTHON, REPO, Processes, free_port, wait_for

T = TypeVar("T")


def broker_auth(broker: MosquittoBroker, topics: Topics, *devices: str) -> BrokerAuth:
    """Accounts for the hub and for `devices` (credential `cert-of-<device>`) written and loaded by `broker`."""
    auth = BrokerAuth(broker.dir, topics)
    auth.set_devices({d: f"cert-of-{d}" for d in devices})
    auth.write()
    assert auth.reload()
    time.sleep(0.3)  # mosquitto re-reads its files on SIGHUP
    return auth


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """mosquitto with a generated config (no anonymous access, hub-written passwords/ACL); always stopped."""
    broker = MosquittoBroker(tmp_path / "broker", free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class MqttHub:
    """A running `hub serve --mqtt` and its broker."""

    address: str  # HOST:PORT of the API
    broker: MosquittoBroker
    data_dir: Path
    processes: Processes | None = None
    args: list[str] | None = None
    proc: Any = None

    def start(self) -> None:
        """Start (or start again) `hub serve` with the same data dir and ports."""
        assert self.processes is not None and self.args is not None
        proc = self.processes.start(self.args, name="hub", cwd=REPO)
        self.proc = proc
        before = self.processes.log(proc).count("agents MQTT")

        def ready() -> bool:
            assert proc.poll() is None, f"hub exited early:\n{self.processes.log(proc)}"  # type: ignore[union-attr]
            return self.processes.log(proc).count("agents MQTT") > before  # type: ignore[union-attr]

        wait_for(ready, timeout=30, what="hub with MQTT bridge")
        remember_hub(self.url, self.data_dir)

    def stop(self) -> None:
        """Stop `hub serve` (SIGTERM)."""
        assert self.processes is not None
        self.processes.stop(self.proc)

    @property
    def url(self) -> str:
        """API base URL."""
        return f"http://{self.address}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `hub --hub URL ARGS...`."""
        return subprocess.run([PYTHON, "-m", "hub", "--hub", self.url, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, env=cli_env(self.url))

    def get(self, path: str) -> Any:
        """GET an API path (JSON) with the hub's admin token."""
        return api_get(self.url, path)

    def device(self, name: str) -> dict[str, Any]:
        """`GET /api/v1/devices/NAME`."""
        return self.get(f"/api/v1/devices/{name}")

    def token(self, name: str, *labels: str) -> str:
        """A one-time enrollment token for a new device."""
        args = [a for label in labels for a in ("--label", label)]
        done = self.cli("device", "enroll", name, *args, "--output", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["token"]


@pytest.fixture
def mqtt_hub(tmp_path: Path, processes: Processes, mosquitto: MosquittoBroker) -> MqttHub:
    """`hub serve --mqtt` on free ports, writing the broker's password/ACL files."""
    port = free_port()
    data = tmp_path / "hub"
    args = [PYTHON, "-m", "hub", "serve", "--data-dir", str(data), "--port", str(port), "--grpc-port",
            str(free_port()), "--mqtt", mosquitto.url, "--mqtt-dir", str(mosquitto.dir)]
    hub = MqttHub(f"127.0.0.1:{port}", mosquitto, data, processes, args)
    hub.start()
    return hub


class FleetThread:
    """A SimulatedFleet on its own event loop in a thread (the test itself stays synchronous)."""

    def __init__(self, options: FleetOptions) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet", daemon=True)
        self.thread.start()
        self.fleet = SimulatedFleet(options)
        self.call(self.fleet.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the fleet's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Any, *args: Any) -> Any:
        """Call a plain function on the fleet's loop (the agents' objects are not thread-safe)."""

        async def call() -> Any:
            return fn(*args)

        return self.call(call())

    def close(self) -> None:
        """Stop every agent and the loop."""
        try:
            self.call(self.fleet.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def fleet_factory(tmp_path: Path) -> Iterator[Any]:
    """Start in-process fleets (`fleet_factory(FleetOptions)`); every one is stopped at teardown."""
    started: list[FleetThread] = []

    def make(options: FleetOptions) -> FleetThread:
        if not options.token:  # enroll with the admin token of the hub the fleet is pointed at
            options = dataclasses.replace(options, token=hub_token(f"http://{options.hub}"))
        ft = FleetThread(options)
        started.append(ft)
        return ft

    try:
        yield make
    finally:
        for ft in reversed(started):
            ft.close()
