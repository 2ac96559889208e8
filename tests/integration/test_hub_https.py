"""`hub serve` on a network address serves its API over HTTPS, and every client pins the hub CA.

A real hub on 0.0.0.0 (HTTPS by default): plain HTTP gets no API; `hub login` pins the CA by its
fingerprint (a wrong one is refused), later CLI calls verify against it and fail without it; an agent
enrolls over https with its token's pin, is refused with a token pinning another CA, and deploys a model
to Healthy, pulling it over https. `--insecure` on 0.0.0.0 serves plain HTTP and warns at start.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.registry_support import cli_env
from tests.support import PYTHON, REPO, Processes, free_port, wait_for


@dataclass
class HttpsHub:
    """A `hub serve --host 0.0.0.0` subprocess and what a client needs to reach it."""

    url: str
    data_dir: Path
    token: str
    ca_sha256: str
    log: str


def _serve(processes: Processes, data_dir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = processes.start([PYTHON, "-m", "hub", "serve", "--data-dir", str(data_dir), "--host", "0.0.0.0",
                            "--port", str(port), "--grpc-port", "0", *extra], name="hub", cwd=REPO)  # fmt: skip
    wait_for(lambda: "hub serving" in processes.log(proc) or proc.poll() is not None, timeout=30, what="hub up")
    assert proc.poll() is None, processes.log(proc)
    return proc, port


@pytest.fixture
def https_hub(tmp_path: Path, processes: Processes) -> HttpsHub:
    proc, port = _serve(processes, tmp_path / "hub")
    ca_pem = (tmp_path / "hub" / "pki" / "ca.crt").read_text()
    ca_sha256 = hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca_pem)).hexdigest()
    token = (tmp_path / "hub" / "admin.token").read_text().strip()
    return HttpsHub(f"https://127.0.0.1:{port}", tmp_path / "hub", token, ca_sha256, processes.log(proc))


def _cli(hub: HttpsHub, config: Path, *args: str, token: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**cli_env(), "EDGEPORT_CONFIG": str(config)}
    if token:
        env["EDGEPORT_TOKEN"] = hub.token
    return subprocess.run([PYTHON, "-m", "hub", "--hub", hub.url, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)  # fmt: skip


def test_network_hub_serves_https_and_login_pins_its_ca(tmp_path: Path, https_hub: HttpsHub) -> None:
    assert f"hub serving {https_hub.url.replace('127.0.0.1', '0.0.0.0')}" in https_hub.log
    assert f"--ca-fingerprint {https_hub.ca_sha256}" in https_hub.log  # the login line to copy
    plain = https_hub.url.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{plain}/api/v1/health", timeout=5).read()
    context = ssl.create_default_context(cafile=str(https_hub.data_dir / "pki" / "ca.crt"))
    with urllib.request.urlopen(f"{https_hub.url}/api/v1/health", timeout=5, context=context) as r:
        assert json.loads(r.read()) == {"status": "ok"}

    config = tmp_path / "user" / "config.json"
    unpinned = _cli(https_hub, config, "model", "list", token=True)  # the system CAs do not know the hub CA
    assert unpinned.returncode == 1 and "does not trust" in unpinned.stderr, unpinned.stderr
    wrong = _cli(https_hub, config, "login", "--token", https_hub.token, "--ca-fingerprint", "ab" * 32)
    assert wrong.returncode == 2 and "refusing to trust" in wrong.stderr and not config.exists(), wrong.stderr
    no_terminal = _cli(https_hub, config, "login", "--token", https_hub.token)
    assert no_terminal.returncode == 2 and https_hub.ca_sha256 in no_terminal.stderr

    done = _cli(https_hub, config, "login", "--token", https_hub.token, "--ca-fingerprint",
                "SHA256:" + https_hub.ca_sha256.upper())  # fmt: skip
    assert done.returncode == 0, done.stderr
    stored = json.loads(config.read_text())
    assert stored["cas"][https_hub.url] == (https_hub.data_dir / "pki" / "ca.crt").read_text()
    assert config.stat().st_mode & 0o777 == 0o600
    listed = _cli(https_hub, config, "model", "list", "--output", "json")  # token and CA from the login
    assert listed.returncode == 0, listed.stderr
    sdk = subprocess.run([PYTHON, "-c", "from hub.sdk import Workspace; ws = Workspace(); "
                          "print(ws.url, ws.client.request('GET', '/api/v1/whoami').json()['role'])"],
                         capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**cli_env(), "EDGEPORT_CONFIG": str(config)})  # fmt: skip
    assert sdk.stdout.split() == [https_hub.url, "admin"], sdk.stderr  # the SDK reads the same login


def test_agent_enrolls_and_pulls_over_https_with_the_pinned_ca(
    tmp_path: Path, processes: Processes, https_hub: HttpsHub, digits_model: Path
) -> None:
    config = tmp_path / "user" / "config.json"
    assert _cli(https_hub, config, "login", "--token", https_hub.token, "--ca-fingerprint",
                https_hub.ca_sha256).returncode == 0  # fmt: skip

    def enrollment_token(name: str, *labels: str) -> str:
        label_args = [a for label in labels for a in ("--label", label)]
        done = _cli(https_hub, config, "device", "enroll", name, *label_args, "--output", "json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["token"])

    # A token pinning another CA: the agent refuses the hub before sending anything of its own.
    forged = enrollment_token("edge-forged").rsplit(".", 1)[0] + "." + "0" * 64
    refused = subprocess.run([PYTHON, "-m", "agent", "run", "--hub", https_hub.url, "--data-dir",
                              str(tmp_path / "forged"), "--token", forged], capture_output=True, text=True,
                             cwd=REPO, timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "refusing to trust" in refused.stderr, refused.stderr

    # The agent dials the hub by this machine's name, as a device elsewhere would: the name the hub's
    # certificate carries and the OCI address it hands out (a hub on 0.0.0.0 advertises its host name).
    by_name = https_hub.url.replace("127.0.0.1", socket.gethostname())
    agent = processes.start([PYTHON, "-m", "agent", "run", "--hub", by_name, "--data-dir",
                             str(tmp_path / "edge-1"), "--token", enrollment_token("edge-1", "site=https")],
                            name="agent", cwd=REPO)  # fmt: skip
    wait_for(lambda: "connected to hub as device edge-1" in processes.log(agent), timeout=60,
             what="agent enrolled over https")  # fmt: skip
    assert _cli(https_hub, config, "model", "register", "-n", "digits", "-p", str(digits_model.parent)).returncode == 0
    done = _cli(https_hub, config, "deploy", "-n", "digits-https", "-m", "digits:1", "--target", "site=https",
                "--timeout", "90")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + processes.log(agent)
    assert "Healthy" in done.stdout


def test_insecure_on_a_network_address_serves_plain_http_and_warns(tmp_path: Path, processes: Processes) -> None:
    proc, port = _serve(processes, tmp_path / "hub", "--insecure")
    log = processes.log(proc)
    assert f"hub serving http://0.0.0.0:{port}" in log
    assert "WARNING" in log and "plain HTTP" in log
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
        assert r.status == 200
