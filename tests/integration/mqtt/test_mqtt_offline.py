"""Offline life over MQTT: real hub, real mosquitto, real agents (in-process fleet) behind a netfault proxy.

Under telemetry load the link is cut for 30 s: the hub marks the devices offline (Last Will), a desired
state changed meanwhile is applied on reconnect, and every numbered point reaches the hub exactly once
(0 lost, 0 duplicated).
A blackholed link (sockets open, nothing flows) is noticed by keep-alive and the Last Will fires in time.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.link import mqtt as agent_mqtt
from simulators.fleet import LOAD_METRIC, FleetOptions
from simulators.models import digits_data
from simulators.netfault_control import ThreadedFaultProxy
from tests.integration.mqtt.conftest import MqttHub
from tests.support import wait_for

KEEPALIVE_S = 2


@pytest.fixture
def proxy(mqtt_hub: MqttHub) -> Any:
    """A netfault proxy between the agents and the broker (the hub talks to the broker directly)."""
    with ThreadedFaultProxy(("127.0.0.1", mqtt_hub.broker.port)) as p:
        yield p


@pytest.fixture(autouse=True)
def short_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents ping every 2 s, so a silent link ends (and the Last Will fires) ~3 s after it went quiet."""
    monkeypatch.setattr(agent_mqtt, "DEFAULT_KEEPALIVE_S", KEEPALIVE_S)


def _stored(hub: MqttHub, device: str) -> list[float]:
    rows = hub.get(f"/api/v1/telemetry?device={device}&metric={LOAD_METRIC}&limit=10000")
    return [r["value"] for r in rows]


def _online(hub: MqttHub, names: list[str]) -> list[bool]:
    return [hub.device(n)["online"] for n in names]


@pytest.mark.slow
def test_cut_under_load_loses_nothing_duplicates_nothing_and_converges(
    tmp_path: Path, mqtt_hub: MqttHub, proxy: ThreadedFaultProxy, fleet_factory: Any, digits_model: Path
) -> None:
    cut_s = 30
    done = mqtt_hub.cli("model", "register", "-n", "digits", "-p", str(digits_model.parent))
    assert done.returncode == 0, done.stderr
    ft = fleet_factory(FleetOptions(
        hub=mqtt_hub.address, count=2, root=tmp_path / "fleet", profile="iot-edge", transport="mqtt",
        broker=f"mqtt://127.0.0.1:{proxy.port}", heartbeat_s=1, telemetry_rate=100, telemetry_batch=5,
        labels={"site": "flaky"},
    ))
    names = ft.fleet.names()
    wait_for(lambda: all(_online(mqtt_hub, names)), timeout=30, what="fleet online over MQTT")
    time.sleep(1.5)  # load flows through the link

    proxy.cut()
    cut_at = time.monotonic()
    wait_for(lambda: not any(_online(mqtt_hub, names)), timeout=5, what="Last Will marks both offline")
    # Desired state changes while the device is away: deploy to the first device only.
    done = mqtt_hub.cli("deploy", "-n", "while-away", "-m", "digits:1", "--target", names[0], "--no-wait")
    assert done.returncode == 0, done.stderr
    wanted = mqtt_hub.device(names[0])["desired_revision"]
    time.sleep(max(0.0, cut_s - (time.monotonic() - cut_at)))
    queued = ft.run(lambda: [d.daemon.outbox.first_pending_seq() for d in ft.fleet.devices])
    proxy.restore()

    wait_for(lambda: all(_online(mqtt_hub, names)), timeout=30, what="fleet back online")
    time.sleep(1.0)
    ft.run(ft.fleet.stop_load)
    sent = ft.run(lambda: {d.name: d.load_sent for d in ft.fleet.devices})
    for name in names:
        wait_for(lambda n=name: len(_stored(mqtt_hub, n)) >= sent[n], timeout=30, what=f"{name}'s points stored")
        time.sleep(0.5)  # a late duplicate would land now
        values = sorted(_stored(mqtt_hub, name))
        lost = sent[name] - len(set(values))
        duplicated = len(values) - len(set(values))
        print(f"{name}: sent {sent[name]} points, stored {len(values)}, lost {lost}, duplicated {duplicated} "
              f"(cut {cut_s}s; outbox first pending seqs at restore {queued})")
        assert (lost, duplicated) == (0, 0)
        assert values == [float(i) for i in range(1, sent[name] + 1)]  # exactly 1..N: nothing lost, nothing twice

    # The desired state set while away was applied on reconnect.
    def converged() -> bool:
        d = mqtt_hub.device(names[0])
        return d["applied_revision"] >= wanted and any(
            s.get("phase") in ("Healthy", "HEALTHY") for s in d["services"])

    wait_for(converged, timeout=60, what=f"{names[0]} runs the service deployed while it was away")

    # With the link cut again, the device keeps serving what it runs.
    uri = next(s["scoring_uri"] for s in mqtt_hub.device(names[0])["services"] if s.get("scoring_uri"))
    proxy.cut()
    x, _ = digits_data()
    req = urllib.request.Request(uri, data=json.dumps({"data": x[:2].tolist()}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200 and json.loads(r.read())
    proxy.restore()
    assert mqtt_hub.device(names[1])["services"] == [] or all(
        s.get("service") != "while-away" for s in mqtt_hub.device(names[1])["services"])


def test_blackholed_link_is_noticed_within_the_keepalive_window(
    tmp_path: Path, mqtt_hub: MqttHub, proxy: ThreadedFaultProxy, fleet_factory: Any
) -> None:
    ft = fleet_factory(FleetOptions(
        hub=mqtt_hub.address, count=1, root=tmp_path / "fleet", transport="mqtt",
        broker=f"mqtt://127.0.0.1:{proxy.port}", heartbeat_s=1, telemetry_rate=20, telemetry_batch=2,
    ))
    name = ft.fleet.names()[0]
    wait_for(lambda: mqtt_hub.device(name)["online"], timeout=30, what="device online")
    proxy.drop()  # sockets stay open; only keep-alive can tell
    dropped = time.monotonic()
    wait_for(lambda: not mqtt_hub.device(name)["online"], timeout=KEEPALIVE_S * 1.5 + 3, interval=0.1,
             what="Last Will after a silent link")
    noticed = time.monotonic() - dropped
    print(f"blackhole noticed after {noticed:.1f}s (keep-alive {KEEPALIVE_S}s)")
    assert noticed >= KEEPALIVE_S * 0.5  # it was the keep-alive, not a closed socket
    proxy.restore()
    wait_for(lambda: mqtt_hub.device(name)["online"], timeout=30, what="device back")
    ft.run(ft.fleet.stop_load)
    sent = ft.run(lambda: ft.fleet.devices[0].load_sent)
    wait_for(lambda: len(_stored(mqtt_hub, name)) >= sent, timeout=30, what="points stored")
    values = _stored(mqtt_hub, name)
    assert sorted(values) == [float(i) for i in range(1, sent + 1)]


def test_hub_restart_loses_nothing_and_sessions_resume(
    tmp_path: Path, mqtt_hub: MqttHub, fleet_factory: Any
) -> None:
    """The hub goes away while agents stay connected to the broker: their reports wait in the hub's persistent
    session (or in the agents' outboxes), and the restarted hub takes the devices back without a new Hello."""
    ft = fleet_factory(FleetOptions(
        hub=mqtt_hub.address, count=2, root=tmp_path / "fleet", transport="mqtt", heartbeat_s=1,
        telemetry_rate=50, telemetry_batch=5,
    ))
    names = ft.fleet.names()
    wait_for(lambda: all(_online(mqtt_hub, names)), timeout=30, what="fleet online")
    time.sleep(1.0)
    mqtt_hub.stop()
    time.sleep(3.0)  # reports pile up while the hub is down
    mqtt_hub.start()
    wait_for(lambda: all(_online(mqtt_hub, names)), timeout=30, what="devices online at the restarted hub")
    time.sleep(1.0)
    ft.run(ft.fleet.stop_load)
    sent = ft.run(lambda: {d.name: d.load_sent for d in ft.fleet.devices})
    for name in names:
        wait_for(lambda n=name: len(_stored(mqtt_hub, n)) >= sent[n], timeout=30, what=f"{name}'s points stored")
        time.sleep(0.3)
        assert sorted(_stored(mqtt_hub, name)) == [float(i) for i in range(1, sent[name] + 1)]
