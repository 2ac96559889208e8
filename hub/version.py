"""The hub's version: one string for `hub --version`, the REST API's OpenAPI document and the SDK.

Read from the installed package's metadata, so it is always the version in pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata


def _installed_version() -> str:
    try:
        return importlib.metadata.version("edgeport")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


VERSION = _installed_version()
