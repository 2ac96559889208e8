"""Fixtures of the in-process hub tests: a real data dir (SQLite, blobs, CA) with every service wired."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.services import HubServices


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServices]:
    """`HubServices` on a fresh data dir, closed (queued agent messages stored) after the test."""
    services = HubServices.open(tmp_path / "hub")
    try:
        yield services
    finally:
        services.close()
