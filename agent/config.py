"""What an agent is told (`AgentConfig`, from `agent run`) and the parts it is given (`DaemonParts`).

The CLI fills in the config and takes the default parts; a process that embeds thousands of agents
(simulators/fleet.py) swaps parts for shared or simulated ones. Nothing here runs anything.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.cache import DEFAULT_MAX_BYTES as CACHE_MAX_BYTES
from agent.hardware import inventory
from agent.outbox import DEFAULT_MAX_BYTES as OUTBOX_MAX_BYTES
from agent.registry_client import RegistryClient
from agent.reports import DEFAULT_STATUS_LINGER_S
from agent.rollout import DEFAULT_PULL_RETRY_WINDOW_S
from agent.supervisor import Supervisor
from agent.telemetry import RuntimeStats, rss_bytes, scrape
from protos.edgeport.v1 import agent_pb2


@dataclass
class AgentConfig:
    """What `agent run` was told."""

    hub: str
    data_dir: Path
    token: str | None = None
    insecure: bool = False
    transport: str = "grpc"
    broker: str | None = None
    profile: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_s: int | None = None
    telemetry_s: int | None = None
    runtime_host: str = "127.0.0.1"
    # Who runtimes run as (agent/supervisor/runtime_user.py): None the agent's own user (embedders such as
    # the fleet simulator), "" the default for an agent running as root (edgeport-runtime), or a user's name.
    runtime_user: str | None = None
    keep_runtimes: bool = False  # on a clean stop leave runtimes running (a restarted agent adopts them)
    metrics_port: int | None = None  # serve the agent's /metrics here (agent/metrics.py); None: off, saving memory
    metrics_host: str = "127.0.0.1"
    # The CLI's agent owns its process: signal handlers, a small thread pool, and a re-exec after enrolling
    # (a fresh image keeps the idle RSS low). Off for agents embedded in another process (simulators/fleet.py).
    owns_process: bool = False
    cache_max_bytes: int = CACHE_MAX_BYTES
    outbox_max_bytes: int = OUTBOX_MAX_BYTES
    status_linger_s: float = DEFAULT_STATUS_LINGER_S  # 0: every status goes into the outbox at once
    # How long a pull the registry keeps refusing (a blob damaged on the hub) is retried before the generation fails.
    pull_retry_window_s: float = DEFAULT_PULL_RETRY_WINDOW_S


def say(line: str) -> None:
    """One progress line on stdout, flushed at once (tests and operators follow these)."""
    print(f"agent: {line}", flush=True)


@dataclass
class DaemonParts:
    """The seams a process embedding many agents (simulators/fleet.py) may swap; the CLI uses the defaults.

    `inventory` reads the hardware from a profile (or the machine), `supervisor` makes the one place that
    starts runtimes, `say` takes the progress lines (thousands of agents cannot share one stdout), `scrape`
    and `rss` read a runtime's /metrics and memory for telemetry (agents sharing one runtime share these;
    `figures_in_memory` says they answer without blocking), `sync_file` makes a pulled blob durable before
    it enters the cache (fsync), `registry_client` holds the pulls' keep-alive connections (one per process).
    """

    inventory: Callable[[dict | None], agent_pb2.HardwareInventory] = inventory
    supervisor: Callable[[Path], Supervisor] = Supervisor
    say: Callable[[str], None] = say
    scrape: Callable[[int], RuntimeStats | None] = scrape
    rss: Callable[[int], int] = rss_bytes
    sync_file: Callable[[int], None] = os.fsync
    registry_client: RegistryClient = field(default_factory=RegistryClient)  # pulls' connections, shared
    # Whether `scrape` and `rss` answer from memory (a fleet's shared figures, read for real once every few
    # seconds): then telemetry calls them on the event loop, not through the thread pool per agent and interval.
    figures_in_memory: bool = False
