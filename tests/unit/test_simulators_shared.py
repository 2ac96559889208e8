"""What the agents of one --shared-runtime fleet process share (the one runtime's figures) and what stays
each agent's own (its numbered sensor points)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.daemon import AgentConfig
from agent.outbox import Outbox
from agent.state import AgentState
from agent.telemetry import RuntimeStats, TelemetryCollector
from simulators import shared_runtime
from simulators.fleet import LOAD_METRIC, FleetOptions, SimulatedDevice, SimulatedFleet


def test_one_scrape_per_runtime_serves_every_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(shared_runtime, "scrape", lambda port: calls.append(port) or RuntimeStats(requests=7.0))
    monkeypatch.setattr(shared_runtime, "rss_bytes", lambda pid: calls.append(-pid) or 1 << 20)
    monkeypatch.setattr(shared_runtime, "_scrapes", {})
    monkeypatch.setattr(shared_runtime, "_rss", {})
    agents = [TelemetryCollector(scrape=shared_runtime.shared_scrape, rss=shared_runtime.shared_rss) for _ in range(50)]
    threads = [threading.Thread(target=a.runtime_points, args=("svc", 5001, 42)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [-42, 5001]  # one /metrics scrape and one /proc read for 50 agents
    points = {p.metric: p.value for p in agents[0].runtime_points("svc", 5001, 42)}
    assert points["runtime.requests_total"] == 7.0 and points["runtime.rss_bytes"] == 1 << 20
    shared_runtime.shared_scrape(5002)  # another runtime is scraped on its own
    assert calls.count(5002) == 1
    monkeypatch.setattr(shared_runtime, "SCRAPE_TTL_S", 0.0)  # past the TTL: scraped again
    shared_runtime.shared_scrape(5001)
    assert calls.count(5001) == 2


def test_shared_runtime_fleet_wires_the_shared_figures(tmp_path: Path) -> None:
    fleet = SimulatedFleet(FleetOptions(hub="127.0.0.1:1", count=1, root=tmp_path, shared_runtime=True))
    assert fleet.parts.scrape is shared_runtime.shared_scrape and fleet.parts.rss is shared_runtime.shared_rss
    alone = SimulatedFleet(FleetOptions(hub="127.0.0.1:1", count=1, root=tmp_path))
    assert alone.parts.scrape is not shared_runtime.shared_scrape


def test_sensor_points_are_numbered_per_device_without_gaps(tmp_path: Path) -> None:
    fleet = SimulatedFleet(FleetOptions(hub="127.0.0.1:1", count=2, root=tmp_path))
    devices = [SimulatedDevice(n, AgentConfig(hub="127.0.0.1:1", data_dir=tmp_path / n), fleet.parts) for n in "ab"]
    for d in devices:
        d.daemon.state = AgentState(tmp_path / d.name)
        d.daemon.outbox = Outbox(d.daemon.state)
    devices[0].add_load(3)
    devices[1].add_load(2)
    devices[0].add_load(2)
    for device, expected in zip(devices, ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0]), strict=True):
        assert device.daemon.outbox is not None
        points = [p for m in device.daemon.outbox.pending() for p in m.telemetry.points]
        assert [p.value for p in points] == expected and device.load_sent == len(expected)
        assert all(p.metric == LOAD_METRIC and p.labels["simulated"] == "true" and p.at_ms > 0 for p in points)
