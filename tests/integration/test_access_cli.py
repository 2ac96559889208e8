"""Access from the command line against a real `hub serve`: the first admin token, `hub login`, `hub token`,
refusals that name the role, `hub audit`, and re-enrolling a revoked device's name."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from tests.integration.registry_support import assert_one_line_error, cli_env, hub_cli, start_hub
from tests.support import PYTHON, REPO, Processes


def test_tokens_roles_login_and_audit_from_the_cli(processes: Processes, tmp_path: Path) -> None:
    hub = start_hub(processes, tmp_path / "hub")
    token_file = tmp_path / "hub" / "admin.token"
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    assert f"admin API token (shown once; also in {token_file}" in hub.log() and hub.token in hub.log()

    # no token at all: refused, and told where a token goes
    anonymous = hub_cli(hub.url, "model", "list", token="")
    assert_one_line_error(anonymous, 2, "needs a hub API token with role viewer", "hub login")

    # hub login stores the token (0600) and later commands use it, for that hub
    config = tmp_path / "user" / "config.json"
    env = {**cli_env(), "EDGEPORT_CONFIG": str(config)}
    login = subprocess.run([PYTHON, "-m", "hub", "login", "--hub", hub.url, "--token", hub.token],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=60)  # fmt: skip
    assert login.returncode == 0, login.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"hub": hub.url, "tokens": {hub.url: hub.token}}
    listed = subprocess.run([PYTHON, "-m", "hub", "token", "list", "--output", "json"],  # --hub from the login
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert [(t["name"], t["role"], t["state"]) for t in json.loads(listed.stdout)] == [("admin", "admin", "active")]
    bad_login = hub_cli(hub.url, "login", "--token", "ept_not-a-token")
    assert_one_line_error(bad_login, 2, "not known to this hub")

    # a viewer reads, is refused changes with the role named, and the refusal is in the audit log
    created = hub_cli(hub.url, "token", "create", "--name", "grafana", "--role", "viewer", "--output", "json")
    assert created.code == 0, created.err
    viewer = created.json()["token"]
    assert hub_cli(hub.url, "model", "list", token=viewer).code == 0
    refused = hub_cli(hub.url, "--token", viewer, "device", "enroll", "cam-01")  # --token on the command line
    assert_one_line_error(refused, 2, "token 'grafana' has role viewer", "needs role admin")
    refused = hub_cli(hub.url, "model", "register", "-n", "m", "-p", str(REPO / "README.md"), token=viewer)
    assert_one_line_error(refused, 2, "role viewer", "needs role deployer")
    assert_one_line_error(hub_cli(hub.url, "token", "list", token=viewer), 2, "needs role admin")
    audit = hub_cli(hub.url, "audit", "--who", "grafana", "--since", "10m", "--output", "json")
    assert audit.code == 0, audit.err
    records = audit.json()
    assert {r["status"] for r in records} == {403} and len(records) == 3
    assert records[-1]["action"] == "POST /api/v1/devices" and records[-1]["source"] == "127.0.0.1"
    table = hub_cli(hub.url, "audit", "--since", "1h")
    assert table.code == 0 and "WHO" in table.out and "POST /api/v1/tokens" in table.out

    # revoked: refused from then on
    assert hub_cli(hub.url, "token", "revoke", "grafana").code == 0
    assert_one_line_error(hub_cli(hub.url, "model", "list", token=viewer), 2, "'grafana' was revoked")
    assert_one_line_error(hub_cli(hub.url, "token", "create", "--name", "x", "--role", "root"), 2, "root")
    assert_one_line_error(
        hub_cli(hub.url, "token", "create", "--name", "grafana", "--role", "viewer"), 2, "exists"
    )

    # a revoked device's name comes back only with --replace
    assert hub_cli(hub.url, "device", "enroll", "cam-01").code == 0
    assert hub_cli(hub.url, "device", "revoke", "cam-01").code == 0
    assert_one_line_error(hub_cli(hub.url, "device", "enroll", "cam-01"), 2, "was revoked", "--replace")
    assert hub_cli(hub.url, "device", "enroll", "cam-01", "--replace").code == 0

    # a restart prints no new token: the admin token still works
    processes.stop(hub.proc)
    again = start_hub(processes, tmp_path / "hub", name="hub-again")
    assert "admin API token" not in again.log() and again.token == hub.token
    assert hub_cli(again.url, "model", "list").code == 0
