"""API tokens for in-process tests of the hub's REST app: a real token of the role a test needs."""

from __future__ import annotations

import itertools

from hub.services import HubServices

_numbers = itertools.count(1)


def token_headers(hub: HubServices, role: str = "admin") -> dict[str, str]:
    """`Authorization` with a new token of `role` on `hub` (token names are never reused, so each is fresh)."""
    token = hub.access.create_token(f"test-{role}-{next(_numbers)}", role)["token"]
    return {"Authorization": f"Bearer {token}"}
