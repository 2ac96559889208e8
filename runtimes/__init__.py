"""Edgeport scoring runtime: serves one model over HTTP (v1 /score, V2 REST) and V2 gRPC.

Started by the agent as `python -m runtimes serve ...` (see runtimes/cli.py); never imported by
the hub or the agent.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
