"""Devices' reports on their services, stored so that an older generation never overwrites a newer one.

Two sources: a DeploymentStatus (each phase change of one service on one device) and the
summary of running services in a Hello, which fills in what the hub missed while the
device was away.
"""

from __future__ import annotations

import time

from hub.store.deployments import DeploymentStore
from protos.edgeport.v1 import agent_pb2


def record_status(store: DeploymentStore, device_id: str, status: agent_pb2.DeploymentStatus) -> None:
    """Store a device's DeploymentStatus (older generations never overwrite newer ones)."""
    if store.state(status.service) != "active" or status.phase == agent_pb2.REMOVED:
        store.drop_statuses(status.service, [device_id])
        return
    store.put_status(
        {
            "service": status.service,
            "device": device_id,
            "generation": status.generation,
            "phase": status.phase,
            "message": status.message,
            "scoring_uri": status.scoring_uri,
            "swagger_uri": status.swagger_uri,
            "serving_generation": status.serving_generation,
            "log_tail": list(status.log_tail),
            "restarts": status.restarts,
            "updated_at": time.time(),
        }
    )


def record_report(store: DeploymentStore, device_id: str, report: agent_pb2.ServiceReport) -> None:
    """A Hello's summary of a running service: fills in what the hub may have missed."""
    if store.state(report.service) != "active":
        return
    old = store.status(report.service, device_id)
    if old is not None and (
        old["generation"] > report.generation
        or (old["generation"] == report.generation and old["phase"] == report.phase)
    ):
        return
    row = dict(old) if old is not None and old["generation"] == report.generation else {}
    row.update(
        {
            "service": report.service,
            "device": device_id,
            "generation": report.generation,
            "phase": report.phase,
            "scoring_uri": report.scoring_uri or row.get("scoring_uri", ""),
            "updated_at": time.time(),
        }
    )
    row.setdefault("serving_generation", report.generation if report.phase == agent_pb2.HEALTHY else 0)
    store.put_status(row)
