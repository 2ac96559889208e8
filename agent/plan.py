"""What a reconcile pass decides: compare the desired manifests with the services' rows and say, per service,
deploy, restart or remove.

A pure function of its inputs, so a pass with nothing to do decides nothing, however often it runs
(the reconciler is level-triggered); carrying the actions out is agent/rollout.py's part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.state import ServiceRecord
from protos.edgeport.v1 import agent_pb2


@dataclass(frozen=True)
class Action:
    """What one reconcile pass decided for one service."""

    kind: str  # deploy | restart | remove
    service: str
    manifest: agent_pb2.ServiceManifest | None = None


def plan(
    desired: Iterable[agent_pb2.ServiceManifest],
    records: Mapping[str, ServiceRecord],
    running: Callable[[str], bool],
) -> list[Action]:
    """The actions that bring `records` (actual) to `desired`; [] when they already match.

    - a desired generation not serving and not known to fail → deploy it;
    - the serving generation's process is gone → restart it (the caller applies backoff);
    - a service no longer desired → remove it.
    """
    actions: list[Action] = []
    wanted = {}
    for m in desired:
        wanted[m.name] = m
        rec = records.get(m.name)
        serving = rec.generation if rec else 0
        failed = rec.failed_generation if rec else 0
        if m.generation != serving and m.generation != failed:
            actions.append(Action("deploy", m.name, m))
        elif serving and not running(m.name):
            actions.append(Action("restart", m.name, rec.manifest if rec else None))
    for name in records:
        if name not in wanted:
            actions.append(Action("remove", name))
    return actions
