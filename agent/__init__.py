"""The Edgeport device agent: converges this device's runtimes to what the hub wants, and reports back.

Modules, one idea each:
    cli           `agent run` / `agent status`
    daemon        wires everything: AgentDaemon, AgentConfig
    link/         one session to the hub (base contract, grpc, mqtt) and the one-time enrollment
    reconciler    level-triggered desired vs actual, rollout and rollback
    cache         ArtifactCache: sha256-verified, resumable, LRU-bounded blobs
    layout        AZUREML_MODEL_DIR and source folders from the cache
    environments  pip venvs per requirements hash
    supervisor    the only place that starts processes
    state         the agent's SQLite (identity, desired state, services)
    outbox        store-and-forward of AgentMessages
    hardware      inventory (never imports onnxruntime)
    telemetry     heartbeat figures, runtime /metrics, agent RSS/CPU
    profiler      answers ProfileRequests with a bounded local load test

Nothing here imports hub/ or runtimes/: they meet through protos/ and HTTP/OCI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.daemon import AgentConfig, AgentDaemon

__all__ = ["AgentConfig", "AgentDaemon"]


def __getattr__(name: str) -> Any:
    # Lazy: `import agent.hardware` (simulators, tests) should not pull in the whole daemon.
    if name in __all__:
        from agent import daemon

        return getattr(daemon, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
