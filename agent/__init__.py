"""The Edgeport device agent: converges this device's runtimes to what the hub wants, and reports back.

Modules, one idea each:
    cli           `agent run` / `agent status`
    daemon        wires everything: AgentDaemon, AgentConfig
    event_loop    uvloop's event loop where installed
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

Nothing here imports hub/ or runtimes/: they meet through protos/ and HTTP/OCI. Programs that
embed agents (simulators, benchmarks) use the names in `__all__` below, nothing deeper.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.daemon import AgentConfig, AgentDaemon, DaemonParts
    from agent.event_loop import run as run_event_loop
    from agent.hardware import ProfileError, inventory, load_profile
    from agent.link.enroll import EnrollError, enroll
    from agent.state import AgentState, Identity
    from agent.supervisor import RuntimeProcess, RuntimeSpec, Supervisor
    from agent.telemetry import RuntimeStats, rss_bytes, scrape

# The public API, for programs that embed agents (simulators, benchmarks): name -> (module, its name there).
_EXPORTS = {
    "AgentConfig": ("agent.daemon", "AgentConfig"),  # what one agent is told: hub, data dir, transport...
    "AgentDaemon": ("agent.daemon", "AgentDaemon"),  # one running agent
    "DaemonParts": ("agent.daemon", "DaemonParts"),  # the seams a process embedding many agents may swap
    "run_event_loop": ("agent.event_loop", "run"),  # asyncio.run on the agent's event loop (uvloop)
    "inventory": ("agent.hardware", "inventory"),  # the hardware inventory, of the machine or of a profile
    "load_profile": ("agent.hardware", "load_profile"),
    "ProfileError": ("agent.hardware", "ProfileError"),
    "enroll": ("agent.link.enroll", "enroll"),  # the one-time exchange of a token for an identity
    "EnrollError": ("agent.link.enroll", "EnrollError"),
    "AgentState": ("agent.state", "AgentState"),  # the agent's SQLite: identity, desired state, services
    "Identity": ("agent.state", "Identity"),
    "Supervisor": ("agent.supervisor", "Supervisor"),  # the one place that starts runtime processes
    "RuntimeSpec": ("agent.supervisor", "RuntimeSpec"),
    "RuntimeProcess": ("agent.supervisor", "RuntimeProcess"),
    "RuntimeStats": ("agent.telemetry", "RuntimeStats"),  # a runtime's figures, from its /metrics
    "scrape": ("agent.telemetry", "scrape"),
    "rss_bytes": ("agent.telemetry", "rss_bytes"),
}

__all__ = [
    "AgentConfig",
    "AgentDaemon",
    "AgentState",
    "DaemonParts",
    "EnrollError",
    "Identity",
    "ProfileError",
    "RuntimeProcess",
    "RuntimeSpec",
    "RuntimeStats",
    "Supervisor",
    "enroll",
    "inventory",
    "load_profile",
    "rss_bytes",
    "run_event_loop",
    "scrape",
]


def __getattr__(name: str) -> Any:
    # Lazy: `import agent.hardware` (tests) or a simulator's `from agent import Supervisor` should not pull in
    # the whole daemon.
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    return getattr(importlib.import_module(target[0]), target[1])
