"""`Workspace`: where the SDK finds the hub (a URL, or a config file like the seed's config.json) and its token."""

from __future__ import annotations

import json
from pathlib import Path

from hub.client import HubClient, default_hub_url
from hub.errors import BadInput

CONFIG_NAMES = (Path(".edgeport") / "config.json", Path("config.json"))


class Workspace:
    """A connection to one hub. `Workspace(url)` or `Workspace.from_config()`.

    The API token is `token`, else `$EDGEPORT_TOKEN`, else the one `hub login` stored for this hub.
    """

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = (url or default_hub_url()).rstrip("/")
        self.client = HubClient(self.url, token=token)

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Workspace:
        """Read `{"hub": URL}` (and optionally `"token"`) from a JSON file.

        `path` may be the file itself, or a folder to search (with its parents) for
        `.edgeport/config.json` or `config.json`; None searches from the current folder.
        """
        config = _find_config(Path(path) if path is not None else Path.cwd())
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot read workspace config {config}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("hub"), str):
            raise BadInput(f'workspace config {config} needs {{"hub": "http://HOST:PORT"}}')
        token = data.get("token")
        if token is not None and not isinstance(token, str):
            raise BadInput(f"workspace config {config}: token must be a string")
        return cls(data["hub"], token=token)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def __repr__(self) -> str:
        return f"Workspace({self.url!r})"


def _find_config(start: Path) -> Path:
    if start.is_file():
        return start
    if not start.exists():
        raise BadInput(f"workspace config {start} does not exist")
    for folder in [start.resolve(), *start.resolve().parents]:
        for name in CONFIG_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise BadInput(f"no .edgeport/config.json or config.json in {start} or any parent folder")
