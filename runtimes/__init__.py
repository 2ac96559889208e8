"""Edgeport scoring runtime: serves one model over HTTP (v1 /score, V2 REST) and V2 gRPC.

Started by the agent as `python -m runtimes serve ...` (see runtimes/cli.py and README.md); never
imported by the hub or the agent. The names below are importable for embedding and tests; they
load lazily so `python -m runtimes providers` stays quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ServeConfig": "runtimes.config",
    "DataPlane": "runtimes.dataplane",
    "serve": "runtimes.server",
    "HardwareProfile": "runtimes.tuning",
    "Authenticator": "runtimes.auth",
    "mint_token": "runtimes.auth",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runtimes' has no attribute {name!r}")
    return getattr(import_module(module), name)
