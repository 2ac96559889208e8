"""The agent's reconciler + supervisor with real runtime subprocesses, pulling from a real `hub serve`.

One hub per module (models registered through its CLI); the reconciler runs in this process
on its own event loop, exactly as the daemon wires it, and starts `python -m runtimes serve`.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.cache import ArtifactCache
from agent.environments import EnvironmentCache
from agent.profiler import profile_service
from agent.reconciler import Reconciler
from agent.state import AgentState
from agent.supervisor import Supervisor, check_healthy, process_start_time
from agent.telemetry import TelemetryCollector
from protos.edgeport.v1 import agent_pb2
from tests.integration.registry_support import cli_env, hub_token, remember_hub
from tests.support import PYTHON, Processes, free_port, wait_for


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, digits_model: Path) -> Iterator[str]:
    """A real hub with digits:1 registered; yields its base URL."""
    tmp = tmp_path_factory.mktemp("agent-hub")
    procs = Processes(tmp)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start(
        [PYTHON, "-m", "hub.cli.main", "serve", "--data-dir", str(tmp / "hub"), "--port", str(port),
         "--grpc-port", str(free_port()), "--insecure"],
        name="hub",
    )  # fmt: skip
    try:
        wait_for(lambda: _get(port, "/api/v1/health")[0] == 200, timeout=30, what="hub up")
        remember_hub(url, tmp / "hub")
        done = subprocess.run(
            [PYTHON, "-m", "hub.cli.main", "--hub", url, "model", "register", "-n", "digits", "-p", str(digits_model)],
            capture_output=True, text=True, timeout=60, env=cli_env(url),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield url
    finally:
        procs.stop_all()


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _post(port: int, path: str, body: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _digits_manifest(hub: str, model: Path, generation: int, **kw: object) -> agent_pb2.ServiceManifest:
    data = model.read_bytes()
    ref = agent_pb2.FileRef(path="model.onnx", digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data))
    manifest = agent_pb2.ServiceManifest(
        name="digits-svc",
        generation=generation,
        models=[agent_pb2.ModelArtifact(name="digits", version=1, repository="models/digits", reference="1",
                                        files=[ref])],
        runtime=agent_pb2.RuntimeSettings(onnx_file="model.onnx"),
        health_timeout_s=30,
        registry=hub,
    )  # fmt: skip
    for key, value in kw.items():
        if key == "onnx_file":
            manifest.runtime.onnx_file = str(value)
        else:
            setattr(manifest, key, value)
    return manifest


class Harness:
    """A reconciler as the daemon wires it, with its reports collected."""

    def __init__(self, data_dir: Path, hub: str) -> None:
        self.state = AgentState(data_dir)
        self.reports: list[agent_pb2.DeploymentStatus] = []
        self.reconciler = Reconciler(
            self.state,
            # an API token pulls from /v2/ as an agent's device pull token does
            ArtifactCache(data_dir / "cache", pull_token=hub_token(hub)),
            EnvironmentCache(data_dir / "envs"),
            Supervisor(data_dir / "logs"),
            self.reports.append,
            services_dir=data_dir / "services",
            default_registry=hub,
        )

    async def until(
        self, pred: Callable[[agent_pb2.DeploymentStatus], bool], timeout: float = 40
    ) -> agent_pb2.DeploymentStatus:
        """Run passes until a report matches `pred`; return it."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for status in self.reports[seen:]:
                if pred(status):
                    return status
            seen = len(self.reports)
            self.reconciler.reconcile_once()
            await asyncio.sleep(0.1)
        phases = [(s.generation, agent_pb2.Phase.Name(s.phase), s.message) for s in self.reports]
        raise AssertionError(f"no matching report within {timeout}s; got {phases}")

    async def settle(self) -> None:
        """Wait until no reconciler task runs."""
        while self.reconciler.tasks:
            await asyncio.sleep(0.05)

    def stop_runtimes(self) -> None:
        for proc in self.reconciler.procs.values():
            self.reconciler.supervisor.stop(proc)


def _phase(phase: int, generation: int | None = None) -> Callable[[agent_pb2.DeploymentStatus], bool]:
    return lambda s: s.phase == phase and (generation is None or s.generation == generation)


def test_deploy_crash_restart_rollback_and_remove(tmp_path: Path, hub: str, digits_model: Path) -> None:
    h = Harness(tmp_path / "agent", hub)

    async def scenario() -> None:
        try:
            # generation 1: pulled from the hub, laid out, started, healthy
            h.reconciler.desired_changed(
                agent_pb2.DesiredState(revision=1, services=[_digits_manifest(hub, digits_model, 1)])
            )
            healthy = await h.until(_phase(agent_pb2.HEALTHY, 1))
            assert healthy.scoring_uri.endswith("/score") and healthy.serving_generation == 1
            port = h.state.service("digits-svc").port
            assert _get(port, "/")[0] == 200
            phases = [s.phase for s in h.reports]
            assert phases.index(agent_pb2.PULLING) < phases.index(agent_pb2.STARTING) < phases.index(agent_pb2.HEALTHY)
            assert _post(port, "/score", json.dumps({"data": [[0.0] * 64]}))[0] == 200
            assert _post(port, "/score", "{not json")[0] == 400
            points = {p.metric: p.value for p in TelemetryCollector().runtime_points("digits-svc", port)}
            assert points["runtime.requests_total"] == 2 and points["runtime.errors_total"] == 1
            request = agent_pb2.ProfileRequest(request_id="p1", service="digits-svc", requests=20, concurrency=2,
                                               payload=json.dumps({"data": [[0.0] * 64]}).encode())  # fmt: skip
            profiled = profile_service(h.state.service("digits-svc"), request)
            assert profiled.message.startswith("20 ok, 0 failed") and profiled.rps > 0
            assert 0 < profiled.p50_ms <= profiled.p99_ms
            assert (
                points["runtime.latency_p50_ms"] > 0
                and points["runtime.latency_p99_ms"] >= points["runtime.latency_p50_ms"]
            )

            # crash: kill -9 the runtime; the agent restarts it on the same port with backoff and says so
            first_pid = h.reconciler.procs["digits-svc"].pid
            os.kill(first_pid, signal.SIGKILL)
            restarting = await h.until(_phase(agent_pb2.RESTARTING))
            assert restarting.restarts == 1 and "restart 1 in 1s" in restarting.message
            back = await h.until(lambda s: s.phase == agent_pb2.HEALTHY and s.restarts == 1)
            assert back.scoring_uri == healthy.scoring_uri
            assert h.reconciler.procs["digits-svc"].pid != first_pid and _get(port, "/")[0] == 200

            # generation 2 cannot start (its model file does not exist): rolled back, generation 1 never stopped
            serving_pid = h.reconciler.procs["digits-svc"].pid
            broken = _digits_manifest(hub, digits_model, 2, onnx_file="missing.onnx")
            h.reconciler.desired_changed(agent_pb2.DesiredState(revision=2, services=[broken]))
            rolled = await h.until(_phase(agent_pb2.ROLLED_BACK, 2))
            assert rolled.serving_generation == 1 and "rolled back to generation 1" in rolled.message
            assert rolled.log_tail, "the runtime's last log lines travel with the rollback"
            assert h.reconciler.procs["digits-svc"].pid == serving_pid and _get(port, "/")[0] == 200
            await h.settle()
            assert h.reconciler.reconcile_once() == []  # the failed generation is not retried in a loop

            # removed from desired state: stopped, files gone, row gone
            h.reconciler.desired_changed(agent_pb2.DesiredState(revision=3))
            await h.until(_phase(agent_pb2.REMOVED))
            assert process_start_time(serving_pid) == 0
            assert not (tmp_path / "agent" / "services" / "digits-svc").exists()
            assert h.state.services() == {}
        finally:
            await h.reconciler.stop_all()
            h.stop_runtimes()

    asyncio.run(scenario())


def test_agent_restart_adopts_runtime_and_fixed_port_rollback(tmp_path: Path, hub: str, digits_model: Path) -> None:
    data = tmp_path / "agent"
    port = free_port()
    first = Harness(data, hub)
    second: Harness | None = None

    async def scenario() -> None:
        nonlocal second
        try:
            m1 = _digits_manifest(hub, digits_model, 1, port=port)
            first.reconciler.desired_changed(agent_pb2.DesiredState(revision=1, services=[m1]))
            await first.until(_phase(agent_pb2.HEALTHY, 1))
            pid = first.reconciler.procs["digits-svc"].pid
            await first.reconciler.stop_all()
            first.state.close()  # the agent is gone (as after kill -9); its runtime keeps running

            second = Harness(data, hub)
            second.reconciler.resume()
            assert second.reconciler.procs["digits-svc"].pid == pid  # adopted, not restarted
            assert second.reconciler.reconcile_once() == [] and second.reports == []

            # generation 2 wants the same fixed port and fails: the old one is stopped first, then brought back
            broken = _digits_manifest(hub, digits_model, 2, port=port, onnx_file="missing.onnx")
            second.reconciler.desired_changed(agent_pb2.DesiredState(revision=2, services=[broken]))
            rolled = await second.until(_phase(agent_pb2.ROLLED_BACK, 2))
            messages = " | ".join(s.message for s in second.reports)
            assert f"both use port {port}" in messages
            assert rolled.serving_generation == 1 and rolled.scoring_uri == f"http://127.0.0.1:{port}/score"
            assert check_healthy(port) and process_start_time(pid) == 0  # a new process serves generation 1
        finally:
            if second is not None:
                await second.reconciler.stop_all()
                second.stop_runtimes()

    asyncio.run(scenario())
