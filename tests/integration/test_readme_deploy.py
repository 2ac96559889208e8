"""The README's "Deploying to devices" commands, run as written against a real hub and agent on loopback.

The commands are read from README.md itself, so the README cannot drift from what works. The two
that a user leaves running in a terminal of their own (`hub serve`, `agent run`) are started in the
background instead, on free ports (the test adds `--port`/`--grpc-port` and points the agent at that
port) with the token `hub device enroll` printed; every other line runs in bash exactly as written
(`hub login` too, its config file in the temp folder), from a copy of `examples/` in a temp folder,
with `EDGEPORT_HUB` naming the test's hub.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support import REPO, Processes, free_port, wait_for

SECTION = "## Deploying to devices"
DEFAULT_ADDRESS = "127.0.0.1:7070"
TOKEN_PLACEHOLDER = "ep1.…"


def readme_deploy_lines() -> list[str]:
    """The command lines of the bash blocks in the README's deploy section, in order."""
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "the deploy section has no bash block"
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_lists_the_commands_this_test_knows_how_to_run() -> None:
    lines = readme_deploy_lines()
    assert sum(line.startswith("hub serve ") for line in lines) == 1
    assert sum(line.startswith("agent run ") for line in lines) == 1
    assert any(line.startswith("hub deploy ") and "examples/" in line for line in lines)
    assert not any("../" in line for line in lines), "the README's commands must stay inside the repository"


def _run(script: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run README lines in one bash (variables carry from line to line); fail with the output on error."""
    proc = subprocess.run(["bash", "-euxo", "pipefail", "-c", "\n".join(script)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"README lines failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_deploy_commands_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(REPO / "examples", work / "examples", ignore=shutil.ignore_patterns("model.onnx", "__pycache__"))
    port, grpc_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # `hub login` in the README stores its token in this test's own config, never the user's
    env = {**os.environ, "EDGEPORT_HUB": f"http://{address}", "PYTHONUNBUFFERED": "1",
           "EDGEPORT_CONFIG": str(tmp_path / "edgeport-config.json")}
    env.pop("EDGEPORT_TOKEN", None)
    processes = Processes(tmp_path)
    pending: list[str] = []
    output = ""
    token = ""
    try:
        for line in readme_deploy_lines():
            if line.startswith(("hub serve ", "agent run ")):
                if pending:
                    output += _run(pending, work, env)
                    pending = []
                args = shlex.split(line, comments=True)
                if args[0] == "hub":
                    args += ["--port", str(port), "--grpc-port", str(grpc_port)]
                    hub = processes.start(args, name="hub", env=env, cwd=work)

                    def hub_ready(hub: subprocess.Popen[bytes] = hub) -> bool:
                        assert hub.poll() is None, processes.log(hub)
                        with urllib.request.urlopen(f"http://{address}/api/v1/health", timeout=2) as r:
                            return r.status == 200

                    wait_for(hub_ready, timeout=60, what="the README's hub")
                else:
                    match = re.search(r"ep1\.\S+", output)
                    assert match, f"`hub device enroll` printed no token before `agent run`:\n{output}"
                    token = match.group(0)
                    args = [token if a == TOKEN_PLACEHOLDER else address if a == DEFAULT_ADDRESS else a for a in args]
                    processes.start(args, name="agent", env=env, cwd=work)
            else:
                pending.append(line)
        output += _run(pending, work, env)
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp_path.glob("*.log"))
        raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        processes.stop_all()
    assert token, "the README never started the agent"
    assert re.search(r'^\{"label": ?\[0\]\}', output, re.M), output  # the sample request is a 0; the model says so
    assert "uploading 2 files" in output, output  # score.py and .amlignore, nothing else of examples/digits/src
    assert (work / "examples" / "digits" / "model.onnx").is_file()
