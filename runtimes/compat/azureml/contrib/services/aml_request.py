"""`AMLRequest` (the raw HTTP request a @rawhttp run() gets) and the `rawhttp` decorator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs


class AMLRequest:
    """The parts of a Flask-style request entry scripts use: method, path, args, headers, body."""

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        """Wrap one HTTP request."""
        self.method = method
        self.path = path
        self.query_string = query.encode()
        self.full_path = f"{path}?{query}"
        self.args = {k: v[0] for k, v in parse_qs(query).items()}
        self.headers = _Headers(headers)
        self.data = body

    def get_data(self, as_text: bool = False) -> bytes | str:
        """The body, as bytes or (as_text) str. The Flask `cache` argument is accepted and ignored."""
        return self.data.decode() if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False) -> Any:
        """The body parsed as JSON (None when silent and unparsable)."""
        try:
            return json.loads(self.data)
        except ValueError:
            if silent:
                return None
            raise

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return self.get_json()


class _Headers(dict[str, str]):
    """Case-insensitive header lookup."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)


def rawhttp(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark run() as taking the raw AMLRequest instead of the JSON payload."""
    func.__aml_rawhttp__ = True  # type: ignore[attr-defined]
    return func
