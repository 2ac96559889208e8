"""Credentials for tests of the dashboard, /metrics and telemetry routes: a viewer's bearer token."""

from __future__ import annotations

import itertools

from hub.services import HubServices

_numbers = itertools.count(1)


def viewer_headers(hub: HubServices) -> dict[str, str]:
    """`Authorization` for a viewer: a real viewer token from the hub's access service (the least role that may
    look); any bearer token on a hub without one."""
    access = getattr(hub, "access", None)
    name = f"dashboard-viewer-{next(_numbers)}"  # token names are never reused
    token = access.create_token(name, "viewer")["token"] if access is not None else "viewer-token"
    return {"Authorization": f"Bearer {token}"}
