"""Where the CLI and SDK find a hub token: --token, $EDGEPORT_TOKEN, then `hub login`'s file, per hub URL."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import credentials
from hub.client import HubClient
from hub.errors import BadInput
from tests.support import PYTHON, REPO


@pytest.fixture(autouse=True)
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private config file; no token from the environment or an earlier --token."""
    path = tmp_path / "edgeport" / "config.json"
    monkeypatch.setenv("EDGEPORT_CONFIG", str(path))
    monkeypatch.delenv("EDGEPORT_TOKEN", raising=False)
    monkeypatch.delenv("EDGEPORT_HUB", raising=False)
    credentials.use_token(None)
    yield path
    credentials.use_token(None)


def test_login_file_is_private_and_keeps_a_token_per_hub(config: Path) -> None:
    credentials.save_login("http://a:7070/", "ept_a")
    credentials.save_login("http://b:7070", "ept_b")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["tokens"] == {"http://a:7070": "ept_a", "http://b:7070": "ept_b"}
    assert credentials.logged_in_hub() == "http://b:7070"  # the last login is the default hub
    assert credentials.resolve_token("http://a:7070") == "ept_a"
    assert credentials.resolve_token("http://c:7070") is None  # a token never goes to another hub
    with HubClient() as client:
        assert client.url == "http://b:7070" and client.token == "ept_b"


def test_command_line_then_environment_then_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials.save_login("http://a:7070", "ept_file")
    monkeypatch.setenv("EDGEPORT_TOKEN", "ept_env")
    assert credentials.resolve_token("http://a:7070") == "ept_env"
    credentials.use_token("ept_flag")
    assert credentials.resolve_token("http://a:7070") == "ept_flag"


def test_a_damaged_config_is_named_and_help_still_works(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    with pytest.raises(BadInput, match=str(config)):
        credentials.resolve_token("http://a:7070")
    env = {"EDGEPORT_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    helped = subprocess.run([PYTHON, "-m", "hub", "--help"], capture_output=True, text=True, env=env, cwd=REPO)
    assert helped.returncode == 0, helped.stderr
    listed = subprocess.run([PYTHON, "-m", "hub", "model", "list"], capture_output=True, text=True, env=env, cwd=REPO)
    assert listed.returncode == 2 and listed.stderr.startswith("error: cannot read the Edgeport config")
    assert "Traceback" not in listed.stderr
