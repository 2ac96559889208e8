"""`AMLResponse`: what a @rawhttp run() may return (body, status, headers)."""

from __future__ import annotations

import json
from typing import Any


class AMLResponse:
    """An HTTP response built by the entry script; headers may be set after construction."""

    def __init__(
        self, message: Any, status_code: int = 200, headers: dict[str, str] | None = None, json_str: bool = False
    ) -> None:
        """`json_str` serializes `message` as JSON (else str/bytes as-is)."""
        self.status_code = int(status_code)
        self.headers: dict[str, str] = dict(headers or {})
        if json_str:
            self.data = json.dumps(message).encode()
            self.headers.setdefault("Content-Type", "application/json")
        elif isinstance(message, bytes):
            self.data = message
        else:
            self.data = str(message).encode()

    def get_data(self) -> bytes:
        """The body bytes."""
        return self.data
