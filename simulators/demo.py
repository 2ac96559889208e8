"""The Quick start: one hub, simulated devices, a real model registered, deployed and scored.

Runs every step through the real `hub` and `agent` commands (printed as it goes, so a
person can repeat them by hand), on the embedded default: one hub process with
SQLite and its own artifact endpoint, agents with simulated hardware profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from simulators.models import build_digits_onnx, digits_data
from simulators.profiles import PROFILES

DEVICES = (("edge-1", "iot-edge"), ("vm-1", "cloud-vm"))


class DemoFailed(Exception):
    """A step of the demo did not do what it should; the message says which."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """Drives the Quick start path step by step and cleans up after itself."""

    def __init__(self, work: Path, keep: bool) -> None:
        self.work = work
        self.keep = keep
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api_port = _free_port()
        self.grpc_port = _free_port()
        self.hub_url = f"http://127.0.0.1:{self.api_port}"
        self.env = {**os.environ, "EDGEPORT_HUB": self.hub_url, "PYTHONUNBUFFERED": "1"}

    # ---- helpers -------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"\n== {text}", flush=True)

    def hub(self, *args: str, json_out: bool = False) -> str:
        """Run `hub ARGS` as a user would; echo the command; fail the demo on a non-zero exit."""
        cmd = ["hub", *args] + (["--output", "json"] if json_out else [])
        print("$ " + shlex.join(cmd), flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", "hub", *cmd[1:]],
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=None if not json_out else subprocess.PIPE,
        )
        if proc.returncode != 0:
            raise DemoFailed(f"`{shlex.join(cmd)}` exited {proc.returncode}: {(proc.stderr or '').strip()}")
        if not json_out:
            print(proc.stdout, end="", flush=True)
        return proc.stdout

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process (hub or agent) with its output in `log`."""
        print("$ " + shlex.join(args) + f"   # in the background, log: {log}", flush=True)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def wait_http(self, url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoFailed(f"process exited with {proc.returncode}; last log lines:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise DemoFailed(f"{url} did not answer within {timeout:.0f}s; last log lines:\n{_tail(log)}")

    # ---- the path ------------------------------------------------------------
    def run(self) -> None:
        """The whole Quick start path."""
        data_dir = self.work / "hub-data"
        self.say("Start a hub on the embedded default (SQLite + blob store + OCI endpoint + gRPC)")
        hub_log = self.work / "hub.log"
        hub = self.start(
            [
                "hub",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(self.api_port),
                "--grpc-port",
                str(self.grpc_port),
            ],
            hub_log,
        )
        self.wait_http(f"{self.hub_url}/api/v1/health", 30, hub, hub_log)
        print(f"hub ready at {self.hub_url} (agents' channel on 127.0.0.1:{self.grpc_port})")
        # A new hub writes its first admin token there; every `hub` command below sends it.
        token_file = data_dir / "admin.token"
        self.env["EDGEPORT_TOKEN"] = token_file.read_text().strip()
        print(f"$ export EDGEPORT_TOKEN=$(cat {token_file})   # the hub's first admin token", flush=True)

        self.say("Train a digits classifier from scikit-learn's bundled data and export it to ONNX")
        model_dir = self.work / "digits-model"
        build_digits_onnx(model_dir / "model.onnx")
        print(f"wrote {model_dir / 'model.onnx'} ({(model_dir / 'model.onnx').stat().st_size} bytes)")

        self.say("Register it in the model registry")
        reg = json.loads(
            self.hub(
                "model",
                "register",
                "-n",
                "digits",
                "-p",
                str(model_dir),
                "--tag",
                "task=digits",
                "--description",
                "LogisticRegression on sklearn digits",
                json_out=True,
            )
        )
        print(f"registered {reg['id']}")
        self.hub("model", "list")
        self.hub("model", "download", reg["id"], "--target-dir", str(self.work / "downloaded"))

        self.say("Enroll two simulated devices and start their agents (real agent code, simulated hardware)")
        for name, profile in DEVICES:
            enrolled = json.loads(
                self.hub(
                    "device", "enroll", name, "--label", "fleet=demo", "--label", f"profile={profile}", json_out=True
                )
            )
            profile_file = self.work / f"{name}.profile.json"
            profile_file.write_text(PROFILES[profile].to_json())
            agent_log = self.work / f"agent-{name}.log"
            self.start(
                [
                    "agent",
                    "run",
                    "--hub",
                    f"127.0.0.1:{self.api_port}",
                    "--token",
                    enrolled["token"],
                    "--data-dir",
                    str(self.work / f"agent-{name}"),
                    "--profile",
                    str(profile_file),
                    # Simulated devices on this machine: runtimes run as whoever runs the demo, root included
                    # (a real device run as root starts them as an unprivileged user; see docs/deploy.md).
                    *(["--runtime-user", "root"] if os.geteuid() == 0 else []),
                ],
                agent_log,
            )
        self._wait_devices_online(len(DEVICES), 60)
        self.hub("device", "list")

        self.say("Deploy the model (no-code ONNX) to every device labelled fleet=demo")
        dc = self.work / "deploymentconfig.json"
        dc.write_text(
            json.dumps({"computeType": "edge", "containerResourceRequirements": {"cpu": 1, "memoryInGB": 0.5}})
        )
        self.hub("deploy", "-n", "digits-svc", "-m", reg["id"], "--dc", str(dc), "--target", "fleet=demo")
        show = json.loads(self.hub("service", "show", "digits-svc", json_out=True))

        self.say("Score a held-out row on each device through its scoring URI")
        x, y = digits_data()
        for dev in show["devices"]:
            body = json.dumps({"data": [x[0].tolist()]}).encode()
            req = urllib.request.Request(dev["scoring_uri"], data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                answer = json.loads(resp.read())
            print(f"{dev['device']}: POST {dev['scoring_uri']} -> {json.dumps(answer)[:200]}   (true label {y[0]})")

        if self.keep:
            self.say(f"Everything keeps running (hub {self.hub_url}); stop it with Ctrl-C")
            return
        self.say("Clean up: delete the service")
        self.hub("service", "delete", "digits-svc")

    def _wait_devices_online(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "hub", "device", "list", "--output", "json"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                devices = json.loads(out.stdout)
                if sum(1 for d in devices if d.get("online")) >= count:
                    return
            time.sleep(0.3)
        logs = "\n".join(f"--- {p}\n{_tail(p)}" for p in sorted(self.work.glob("agent-*.log")))
        raise DemoFailed(f"{count} devices did not come online within {timeout:.0f}s\n{logs}")

    def stop(self) -> None:
        """Stop agents (and the runtimes they started), then the hub."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    """`python -m simulators demo`: the Quick start path, end to end."""
    ap = argparse.ArgumentParser(prog="python -m simulators demo", description=__doc__)
    ap.add_argument(
        "--work-dir", type=Path, help="where data, models and logs go, kept afterwards (default: a temp dir, removed)"
    )
    ap.add_argument("--keep", action="store_true", help="leave the hub, agents and service running at the end")
    args = ap.parse_args(argv)
    own_work_dir = args.work_dir is None  # a temp dir the demo made is the demo's to remove
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="edgeport-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}")
    demo = Demo(work.resolve(), args.keep)
    finished = False
    try:
        demo.run()
        while args.keep:
            time.sleep(3600)
        finished = True
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        demo.stop()
        if own_work_dir and finished:
            shutil.rmtree(work, ignore_errors=True)
        else:  # asked for, or kept for the logs that say what went wrong
            print(f"\ndata, model and logs are in {work}", file=sys.stdout if finished else sys.stderr)
    print("\ndemo finished: model registered, deployed to simulated devices and scored.")
    if own_work_dir:
        print(f"removed the work dir {work}")
    return 0
