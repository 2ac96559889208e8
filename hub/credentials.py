"""Where the CLI and the SDK find a hub API token: `--token`, `$EDGEPORT_TOKEN`, or `hub login`'s file.

`hub login --hub URL --token TOKEN` stores `{"hub": URL, "tokens": {URL: TOKEN}}` (and, for an https hub,
`"cas": {URL: PEM}`, the hub CA whose fingerprint the user confirmed) in the user's config
file (`$EDGEPORT_CONFIG`, else `$XDG_CONFIG_HOME/edgeport/config.json`, else
`~/.config/edgeport/config.json`), mode 0600 in a 0700 folder; the last hub logged in to becomes the
default hub. Tokens are kept per hub URL so one never travels to another hub.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hub.errors import BadInput

TOKEN_ENV = "EDGEPORT_TOKEN"
CONFIG_ENV = "EDGEPORT_CONFIG"

_process_token: str | None = None  # `hub --token`: set once by the CLI for every client it makes


def user_config_path() -> Path:
    """The user's Edgeport config file (it may not exist yet)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgeport" / "config.json"


def load_user_config() -> dict[str, Any]:
    """The user's config, `{}` when there is none; BadInput (naming the file) when it is not JSON."""
    path = user_config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the Edgeport config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"the Edgeport config {path} is not a JSON object")
    return data


def save_login(url: str, token: str, ca_pem: str | None = None) -> Path:
    """Store `token` (and the pinned hub CA `ca_pem`, for an https hub) for hub `url` (0600) and make `url` the
    default hub; the file's path."""
    path = user_config_path()
    data = load_user_config()
    stored = data.get("tokens")
    tokens: dict[str, Any] = stored if isinstance(stored, dict) else {}
    tokens[url.rstrip("/")] = token
    data.update({"hub": url.rstrip("/"), "tokens": tokens})
    if ca_pem is not None:
        stored_cas = data.get("cas")
        cas: dict[str, Any] = stored_cas if isinstance(stored_cas, dict) else {}
        cas[url.rstrip("/")] = ca_pem
        data["cas"] = cas
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        raise BadInput(f"cannot write the Edgeport config {path}: {(exc.strerror or str(exc)).lower()}") from None
    return path


def pinned_ca(url: str) -> str | None:
    """The hub CA (PEM) `hub login` pinned for hub `url`, if any."""
    cas = load_user_config().get("cas")
    ca = cas.get(url.rstrip("/")) if isinstance(cas, dict) else None
    return ca if isinstance(ca, str) and ca else None


def logged_in_hub() -> str | None:
    """The hub `hub login` stored last, if any (None from a damaged config: the token lookup says what is wrong)."""
    try:
        hub = load_user_config().get("hub")
    except BadInput:  # `hub --help` names the default hub too, and must not fail over a bad file
        return None
    return hub if isinstance(hub, str) and hub else None


def use_token(token: str | None) -> None:
    """Make `token` (from `hub --token`) the token of every client this process creates."""
    global _process_token
    _process_token = token or None


def resolve_token(url: str) -> str | None:
    """The token for hub `url`: `--token`, else `$EDGEPORT_TOKEN`, else what `hub login` stored for that URL."""
    if _process_token:
        return _process_token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    tokens = load_user_config().get("tokens")
    if isinstance(tokens, dict):
        token = tokens.get(url.rstrip("/"))
        return token if isinstance(token, str) and token else None
    return None
