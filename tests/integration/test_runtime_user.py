"""An agent running as root runs runtimes (entry scripts are user code) as an unprivileged user, for whom only the
service's folder is writable: checked for real with an entry script that tries to write and read elsewhere, served
over HTTPS (the runtime user reads its own TLS key, and nothing else of the agent's)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.registry_support import CliResult, hub_cli, remember_hub
from tests.support import PYTHON, REPO, Processes, free_port, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd (runs runtimes as a user)"
)

# What a runtime's user code might try: report the outcome of each attempt.
PROBE_PY = """\
import os


def init():
    pass


def _attempt(action):
    try:
        action()
        return "ok"
    except PermissionError:
        return "PermissionError"


def _write(path):
    with open(path, "w") as fh:
        fh.write("x")


def run(raw):
    data = os.environ["PROBE_AGENT_DIR"]
    model_dir = os.environ["AZUREML_MODEL_DIR"]
    model_file = os.path.join(model_dir, sorted(os.listdir(model_dir))[0])
    return {
        "uid": os.getuid(),
        "own_folder": _attempt(lambda: _write("scratch.txt")),
        "etc": _attempt(lambda: _write("/etc/edgeport-probe")),
        "agent_db": _attempt(lambda: _write(os.path.join(data, "agent.db"))),
        "agent_folder": _attempt(lambda: _write(os.path.join(data, "planted.txt"))),
        "model_file": _attempt(lambda: _write(model_file)),
        "device_key": _attempt(lambda: open(os.path.join(data, "identity", "device.key")).read()),
        "agent_db_read": _attempt(lambda: open(os.path.join(data, "agent.db"), "rb").read(1)),
        "list_agent_dir": _attempt(lambda: os.listdir(data)),
        "list_cache": _attempt(lambda: os.listdir(os.path.join(data, "cache"))),
        "list_logs": _attempt(lambda: os.listdir(os.path.join(data, "logs"))),
    }
"""


def _reachable_by(uid: int) -> bool:
    """Whether a process of `uid` can run this interpreter (not when it lives under a 0700 /root); it drops
    root as the agent does (setuid: no capabilities left)."""
    drop = (
        f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid}); "
        f"os.execv({PYTHON!r}, ['python', '-c', '1'])"
    )
    done = subprocess.run([PYTHON, "-I", "-c", drop], capture_output=True, timeout=30)
    return done.returncode == 0


@pytest.fixture(scope="module")
def interpreter_reachable() -> Iterator[None]:
    """Let other users pass through the folders above the interpreter (search only) while these tests run.

    Test machines keep Python under /root (0700); a device's Python lives where every user reaches it."""
    changed: list[tuple[Path, int]] = []
    if not _reachable_by(65534):
        for folder in [*reversed(Path(sys.executable).resolve().parents), *reversed(Path(REPO).parents)]:
            mode = stat.S_IMODE(folder.stat().st_mode)
            if not mode & stat.S_IXOTH:
                os.chmod(folder, mode | stat.S_IXOTH)
                changed.append((folder, mode))
    try:
        yield
    finally:
        for folder, mode in changed:
            os.chmod(folder, mode)


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    return result


def test_runtimes_run_as_an_unprivileged_user_that_writes_only_its_folder(
    tmp_path: Path, processes: Processes, interpreter_reachable: None
) -> None:
    # The agent's data dir where another user could reach it at all (pytest's own temp dir is 0700).
    data_dir = Path(tempfile.mkdtemp(prefix="edgeport-runtime-user-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes.start([PYTHON, "-m", "hub", "serve", "--data-dir", str(tmp_path / "hub"), "--port", str(port),
                         "--grpc-port", str(free_port())], name="hub", cwd=REPO)  # fmt: skip
        wait_for(lambda: httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200, timeout=30, what="hub")
        remember_hub(url, tmp_path / "hub")
        token = _ok(hub_cli(url, "device", "enroll", "user-dev", "--output", "json")).json()["token"]
        agent_dir = data_dir / "agent"
        # No --runtime-user: as root the agent uses (and makes when missing) the edgeport-runtime user.
        agent = processes.start([PYTHON, "-m", "agent", "run", "--hub", f"127.0.0.1:{port}", "--data-dir",
                                 str(agent_dir), "--token", token], name="agent", cwd=REPO,
                                env={"EDGEPORT_RUNTIME_USER": ""})  # fmt: skip
        wait_for(lambda: "connected to hub" in processes.log(agent), timeout=30, what="agent connected")
        user = pwd.getpwnam("edgeport-runtime")
        assert f"runtimes run as user edgeport-runtime (uid {user.pw_uid})" in processes.log(agent)

        files = tmp_path / "files"
        (files / "src").mkdir(parents=True)
        (files / "src" / "score.py").write_text(PROBE_PY)
        (files / "model").mkdir()
        (files / "model" / "weights.bin").write_bytes(b"weights")
        ic = files / "ic.json"
        ic.write_text(json.dumps({"entryScript": "score.py", "sourceDirectory": "src",
                                  "environmentVariables": {"PROBE_AGENT_DIR": str(agent_dir)}}))  # fmt: skip
        dc = files / "dc.json"
        dc.write_text(json.dumps({"sslEnabled": True}))
        _ok(hub_cli(url, "model", "register", "-n", "probe-model", "-p", str(files / "model")))
        shown = _ok(hub_cli(url, "deploy", "-n", "probe", "-m", "probe-model:1", "--ic", str(ic), "--dc", str(dc),
                            "--target", "user-dev", "--timeout", "90", "--output", "json")).json()  # fmt: skip
        (device,) = shown["devices"]
        assert device["scoring_uri"].startswith("https://")
        key_file = agent_dir / "services" / "probe" / "tls" / "runtime.key"
        assert key_file.stat().st_uid == user.pw_uid and stat.S_IMODE(key_file.stat().st_mode) == 0o600
        context = ssl.create_default_context(cadata=shown["tls"]["ca_pem"])
        reply = httpx.post(device["scoring_uri"], json={}, verify=context, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {
            "uid": user.pw_uid,
            "own_folder": "ok",
            "etc": "PermissionError",
            "agent_db": "PermissionError",
            "agent_folder": "PermissionError",
            "model_file": "PermissionError",
            "device_key": "PermissionError",
            "agent_db_read": "PermissionError",
            "list_agent_dir": "PermissionError",
            "list_cache": "PermissionError",
            "list_logs": "PermissionError",
        }
        assert user.pw_uid != 0
    finally:
        processes.stop_all()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_runtime_user_that_does_not_exist_stops_the_agent_before_it_enrolls(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "agent", "run", "--hub", "127.0.0.1:9", "--data-dir", str(tmp_path / "a"),
                           "--token", "ep1.x.y.z", "--runtime-user", "no-such-user-here"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--runtime-user no-such-user-here: no such user on this device" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
