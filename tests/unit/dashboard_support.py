"""Credentials for tests of the dashboard, /metrics and telemetry routes: a viewer's bearer token."""

from __future__ import annotations

from hub.services import HubServices


def viewer_headers(hub: HubServices) -> dict[str, str]:
    """`Authorization` with a new viewer token of `hub` (the least role that may look)."""
    token = hub.access.create_token("dashboard-viewer", "viewer")["token"]
    return {"Authorization": f"Bearer {token}"}
