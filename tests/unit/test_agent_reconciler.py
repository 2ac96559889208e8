"""Reconciler decisions (plan) and the pieces it leans on: layout, backoff, runtime argv."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent import reconciler as reconciler_module
from agent.cache import ArtifactCache
from agent.environments import EnvironmentCache, requirements_hash
from agent.layout import LayoutError, blobs_of, lay_out
from agent.manifests import registry_for
from agent.reconciler import Action, Reconciler, plan
from agent.state import AgentState, ServiceRecord
from agent.supervisor import Backoff, RuntimeProcess, RuntimeSpec, Supervisor, free_port, process_start_time
from protos.edgeport.v1 import agent_pb2


def _m(name: str, generation: int, **kw: object) -> agent_pb2.ServiceManifest:
    return agent_pb2.ServiceManifest(name=name, generation=generation, **kw)


def _rec(name: str, generation: int, failed: int = 0) -> ServiceRecord:
    return ServiceRecord(name=name, generation=generation, manifest=_m(name, generation), failed_generation=failed)


def test_new_service_is_deployed() -> None:
    assert plan([_m("a", 1)], {}, lambda n: False) == [Action("deploy", "a", _m("a", 1))]


def test_converged_service_needs_nothing_and_plan_is_idempotent() -> None:
    records = {"a": _rec("a", 3)}
    for _ in range(3):
        assert plan([_m("a", 3)], records, lambda n: True) == []


def test_new_generation_is_deployed_over_the_serving_one() -> None:
    assert plan([_m("a", 4)], {"a": _rec("a", 3)}, lambda n: True) == [Action("deploy", "a", _m("a", 4))]


def test_failed_generation_is_not_retried_until_a_newer_one() -> None:
    records = {"a": _rec("a", 3, failed=4)}
    assert plan([_m("a", 4)], records, lambda n: True) == []
    assert plan([_m("a", 5)], records, lambda n: True) == [Action("deploy", "a", _m("a", 5))]
    first_failed = {"b": ServiceRecord(name="b", failed_generation=1)}  # never had a good generation
    assert plan([_m("b", 1)], first_failed, lambda n: False) == []


def test_dead_runtime_is_restarted_not_redeployed() -> None:
    actions = plan([_m("a", 3)], {"a": _rec("a", 3)}, lambda n: False)
    assert [(a.kind, a.service, a.manifest.generation) for a in actions] == [("restart", "a", 3)]
    # the rolled-back service whose old generation died is restarted too
    actions = plan([_m("a", 4)], {"a": _rec("a", 3, failed=4)}, lambda n: False)
    assert [(a.kind, a.manifest.generation) for a in actions] == [("restart", 3)]


def test_service_left_out_of_desired_state_is_removed() -> None:
    records = {"a": _rec("a", 1), "b": _rec("b", 2)}
    assert plan([_m("a", 1)], records, lambda n: True) == [Action("remove", "b")]
    assert sorted(a.service for a in plan([], records, lambda n: True)) == ["a", "b"]


def _cache_with(tmp_path: Path, files: dict[str, bytes]) -> tuple[ArtifactCache, list[agent_pb2.FileRef]]:
    cache = ArtifactCache(tmp_path / "cache")
    refs = []
    for path, data in files.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        cache.path(digest).write_bytes(data)
        refs.append(agent_pb2.FileRef(path=path, digest=digest, size=len(data)))
    return cache, refs


def test_layout_one_model_is_its_folder_several_are_name_version(tmp_path: Path) -> None:
    cache, refs = _cache_with(tmp_path, {"model.onnx": b"m1", "sub/labels.txt": b"l", "score.py": b"def init(): pass"})
    one = _m("s", 1, models=[agent_pb2.ModelArtifact(name="digits", version=2, files=refs[:2])])
    layout = lay_out(cache, one, tmp_path / "gen1")
    assert (layout.model_dir / "model.onnx").read_bytes() == b"m1"
    assert (layout.model_dir / "sub" / "labels.txt").read_bytes() == b"l"
    assert layout.source_dir is None
    several = _m(
        "s", 2,
        models=[agent_pb2.ModelArtifact(name="digits", version=2, files=refs[:1]),
                agent_pb2.ModelArtifact(name="squeeze", version=7, files=refs[1:2])],
        source=agent_pb2.SourceBundle(entry_script="score.py", files=refs[2:]),
    )  # fmt: skip
    layout = lay_out(cache, several, tmp_path / "gen2")
    assert (layout.model_dir / "digits" / "2" / "model.onnx").read_bytes() == b"m1"
    assert (layout.model_dir / "squeeze" / "7" / "sub" / "labels.txt").exists()
    assert layout.source_dir is not None and (layout.source_dir / "score.py").exists()
    assert len(blobs_of(several)) == 3


@pytest.mark.parametrize("bad", ["../escape.onnx", "/etc/passwd", "a/../../x", ""])
def test_layout_refuses_paths_outside_the_folder(tmp_path: Path, bad: str) -> None:
    cache, refs = _cache_with(tmp_path, {"model.onnx": b"m"})
    refs[0].path = bad
    with pytest.raises(LayoutError, match="must be relative"):
        lay_out(cache, _m("s", 1, models=[agent_pb2.ModelArtifact(name="d", version=1, files=refs)]), tmp_path / "g")
    assert not (tmp_path / "escape.onnx").exists()


def test_backoff_doubles_to_a_cap_and_resets_after_stable_running() -> None:
    b = Backoff(first_s=1, cap_s=8, stable_s=0.0)
    assert [b.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    b.healthy()
    assert b.next_delay() == 1


def test_runtime_argv_follows_the_contract_and_keeps_secrets_out() -> None:
    spec = RuntimeSpec(service="s", generation=1, python="py", model_dir=Path("/m"), port=5001, grpc_port=5002,
                       onnx_file="model.onnx", auth_mode="key", secrets={"EDGEPORT_PRIMARY_KEY": "hunter2"},
                       max_batch_size=8, max_batch_delay_ms=5, cpus=2)  # fmt: skip
    argv = spec.argv()
    assert argv[:4] == ["py", "-m", "runtimes", "serve"]
    assert argv[argv.index("--onnx") + 1] == "model.onnx" and argv[argv.index("--port") + 1] == "5001"
    assert argv[argv.index("--max-batch-size") + 1] == "8" and argv[argv.index("--cpus") + 1] == "2"
    assert "hunter2" not in " ".join(argv)


def test_requirements_hash_ignores_order_and_blanks() -> None:
    assert requirements_hash(["numpy", "scipy==1.0", ""]) == requirements_hash([" scipy==1.0", "numpy"])
    assert requirements_hash(["numpy"]) != requirements_hash(["numpy==2"])


def _reconciler(tmp_path: Path, registry: str) -> tuple[Reconciler, list[agent_pb2.DeploymentStatus], AgentState]:
    state = AgentState(tmp_path / "agent")
    reports: list[agent_pb2.DeploymentStatus] = []
    rec = Reconciler(state, ArtifactCache(tmp_path / "cache"), EnvironmentCache(tmp_path / "envs"),
                     Supervisor(tmp_path / "logs"), reports.append, services_dir=tmp_path / "services",
                     default_registry=registry)  # fmt: skip
    return rec, reports, state


def _pull_manifest(registry: str) -> agent_pb2.ServiceManifest:
    ref = agent_pb2.FileRef(path="model.onnx", digest="sha256:" + "ab" * 32, size=10)
    return _m("svc", 1, models=[agent_pb2.ModelArtifact(name="m", version=1, repository="models/m", files=[ref])],
              registry=registry)  # fmt: skip


async def _run_until_idle(rec: Reconciler) -> None:
    rec.reconcile_once()
    while rec.tasks:
        await asyncio.sleep(0.02)


def test_unreachable_registry_is_retried_with_backoff_not_failed(tmp_path: Path) -> None:
    registry = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rec, reports, state = _reconciler(tmp_path, registry)
    rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[_pull_manifest(registry)]))
    asyncio.run(_run_until_idle(rec))
    assert reports[-1].phase == agent_pb2.PULLING and "retrying in 1s" in reports[-1].message
    assert all(r.phase != agent_pb2.FAILED for r in reports)
    assert state.service("svc") is None  # nothing recorded as failed: the same generation will be tried again
    assert rec.reconcile_once() == []  # ... but not before its backoff ends
    rec.retry_at["svc"] = 0.0
    assert [a.kind for a in asyncio.run(_first_pass(rec))] == ["deploy"]


async def _first_pass(rec: Reconciler) -> list[Action]:
    actions = rec.reconcile_once()
    while rec.tasks:
        await asyncio.sleep(0.02)
    return actions


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_unknown_blob_fails_the_generation_for_good(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        registry = f"http://127.0.0.1:{server.server_address[1]}"
        rec, reports, state = _reconciler(tmp_path, registry)
        rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[_pull_manifest(registry)]))
        asyncio.run(_run_until_idle(rec))
    finally:
        server.shutdown()
        server.server_close()
    assert reports[-1].phase == agent_pb2.FAILED and "HTTP 404" in reports[-1].message
    row = state.service("svc")
    assert row is not None and row.failed_generation == 1
    assert rec.reconcile_once() == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_unsafe_service_names_are_refused_and_never_become_paths(tmp_path: Path, name: str) -> None:
    rec, reports, state = _reconciler(tmp_path, "http://127.0.0.1:1")
    good = _m("fine-svc", 1)
    assert rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[_m(name, 1), good]))
    assert [m.name for m in state.desired().services] == ["fine-svc"]
    assert reports[0].phase == agent_pb2.FAILED and "is not allowed" in reports[0].message


def test_registry_on_an_unspecified_address_falls_back_to_the_enrolled_hub() -> None:
    hub = "http://hub.example:7070"
    assert registry_for(_m("s", 1, registry="http://0.0.0.0:7070"), hub) == "http://hub.example:7070"
    assert registry_for(_m("s", 1, registry="http://10.0.0.5:7070"), hub) == "http://10.0.0.5:7070"
    assert registry_for(_m("s", 1), hub) == "http://hub.example:7070"


class _SleepSupervisor(Supervisor):
    """Starts a sleeping process as the "runtime", healthy at once: what is tested is the reconciler's side."""

    def start(self, spec: RuntimeSpec) -> RuntimeProcess:
        popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        return RuntimeProcess(spec, popen.pid, process_start_time(popen.pid), self.log_path(spec.service, 1), popen)

    async def wait_healthy(self, proc: RuntimeProcess, timeout_s: float) -> None:
        return None


def test_serving_row_and_healthy_report_are_one_commit(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "agent")
    in_transaction: dict[int, bool] = {}

    def report(status: agent_pb2.DeploymentStatus) -> None:
        in_transaction[status.phase] = state.conn.in_transaction

    rec = Reconciler(state, ArtifactCache(tmp_path / "cache"), EnvironmentCache(tmp_path / "envs"),
                     _SleepSupervisor(tmp_path / "logs"), report, services_dir=tmp_path / "services",
                     default_registry="http://127.0.0.1:9")  # fmt: skip

    async def scenario() -> None:
        try:
            rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[_m("svc", 1)]))
            await _run_until_idle(rec)
        finally:
            await asyncio.to_thread(rec.stop_runtimes)

    asyncio.run(scenario())
    # A crash between the two must not leave a serving row whose Healthy report never reaches the hub.
    assert in_transaction[agent_pb2.HEALTHY] is True
    assert in_transaction[agent_pb2.PENDING] is False
    assert state.service("svc").generation == 1  # type: ignore[union-attr]
    state.close()


def test_passes_read_service_rows_without_copies_and_cannot_change_them(tmp_path: Path) -> None:
    state = AgentState(tmp_path)
    state.save_service(_rec("svc", 1))
    rows = state.service_rows()
    assert rows["svc"] is state.service_rows()["svc"]  # every pass of every agent: no copy per row
    assert state.service("svc") is not rows["svc"]  # what callers change and save stays a copy
    with pytest.raises(TypeError):
        rows["other"] = _rec("other", 1)  # type: ignore[index]
    assert plan([_m("svc", 1)], rows, lambda name: True) == []
    state.close()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")
def test_reconciler_restarts_a_crashed_runtime_without_waiting_for_its_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler_module, "RESYNC_S", 3600.0)  # only the exit watch can notice the crash
    monkeypatch.setattr(reconciler_module, "POLL_S", 3600.0)
    state = AgentState(tmp_path / "agent")
    reports: list[agent_pb2.DeploymentStatus] = []
    rec = Reconciler(state, ArtifactCache(tmp_path / "cache"), EnvironmentCache(tmp_path / "envs"),
                     _SleepSupervisor(tmp_path / "logs"), reports.append, services_dir=tmp_path / "services",
                     default_registry="http://127.0.0.1:9")  # fmt: skip

    async def until(phase: int, timeout: float = 10) -> None:
        for _ in range(int(timeout / 0.05)):
            if any(r.phase == phase for r in reports):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {agent_pb2.Phase.Name(phase)} within {timeout}s: {reports}")

    async def scenario() -> None:
        loop_task = asyncio.create_task(rec.run())
        try:
            rec.desired_changed(agent_pb2.DesiredState(revision=1, services=[agent_pb2.ServiceManifest(
                name="svc", generation=1)]))  # fmt: skip
            await until(agent_pb2.HEALTHY)
            assert not rec.work.polling, "this kernel gives pidfds: exits are watched, not polled"
            first = rec.procs["svc"]
            os.kill(first.pid, signal.SIGKILL)
            await until(agent_pb2.RESTARTING, timeout=3)
            assert next(r for r in reports if r.phase == agent_pb2.RESTARTING).message.startswith(
                "runtime exited (code -9)"
            )
        finally:
            loop_task.cancel()
            await rec.stop_all()
            await asyncio.to_thread(rec.stop_runtimes)

    asyncio.run(scenario())
    state.close()
