"""Who runtimes run as (agent/supervisor/runtime_user.py): the choice, and what a runtime user that cannot reach the
interpreter is told. Real processes, real users (the tests that switch users need root)."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from agent.supervisor import RuntimeSpec, RuntimeUnhealthy, RuntimeUser, RuntimeUserError, Supervisor, free_port
from agent.supervisor import resolve_runtime_user as resolve

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def test_none_and_root_mean_the_agents_own_user() -> None:
    assert resolve(None) is None
    if os.geteuid() == 0:
        assert resolve("root") is None


@as_root
def test_a_user_that_does_not_exist_is_named() -> None:
    with pytest.raises(RuntimeUserError, match="--runtime-user no-such-user-here: no such user on this device"):
        resolve("no-such-user-here")


@as_root
def test_an_existing_user_is_taken_if_it_can_run_the_interpreter() -> None:
    """Checked once, at agent start: a user that cannot start Python would fail every deploy."""
    nobody = pwd.getpwnam("nobody")
    if _reachable_by_nobody():
        assert resolve("nobody") == RuntimeUser("nobody", nobody.pw_uid, nobody.pw_gid)
        return
    with pytest.raises(RuntimeUserError) as info:
        resolve("nobody")
    assert info.value.args[0] == (
        f"runtimes would run as nobody, but the runtime user (uid {nobody.pw_uid}) cannot run {sys.executable}: "
        "Permission denied (it needs search permission on every folder above it); let that user reach the "
        "interpreter, give --runtime-user NAME for one that can, or --runtime-user root"
    )


def _reachable_by_nobody() -> bool:
    drop = "import os, sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); os.execv(sys.argv[1], sys.argv[1:])"
    done = subprocess.run([sys.executable, "-I", "-c", drop, sys.executable, "-c", "1"], capture_output=True)
    return done.returncode == 0


@as_root
def test_a_runtime_user_that_cannot_reach_the_interpreter_is_told_why(tmp_path: Path) -> None:
    if _reachable_by_nobody():
        pytest.skip("this interpreter is reachable by every user here")
    supervisor = Supervisor(tmp_path / "logs")
    nobody = pwd.getpwnam("nobody")
    supervisor.runtime_user = RuntimeUser("nobody", nobody.pw_uid, nobody.pw_gid)  # say it lost access since
    (tmp_path / "models").mkdir()
    spec = RuntimeSpec(service="svc", generation=1, python=sys.executable, model_dir=tmp_path / "models",
                       port=free_port(), grpc_port=free_port(), service_dir=tmp_path)  # fmt: skip
    proc = supervisor.start(spec)
    with pytest.raises(RuntimeUnhealthy) as info:
        asyncio.run(supervisor.wait_healthy(proc, 20))
    assert f"cannot run {sys.executable}: Permission denied" in info.value.reason, info.value.reason
    assert "needs search permission on every folder above it" in info.value.reason
