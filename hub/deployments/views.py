"""What users see of a service: its overall state and each targeted device's phase, message and URIs.

Pure functions of stored rows (no reads of their own), shared by the REST API, so the CLI, the
SDK and the dashboard see the same shape.
"""

from __future__ import annotations

import time
from typing import Any

from hub.deployconfig import parse_deployment_config
from protos.edgeport.v1 import agent_pb2

PHASES = {
    agent_pb2.PHASE_UNSPECIFIED: "Pending",
    agent_pb2.PENDING: "Pending",
    agent_pb2.PULLING: "Pulling",
    agent_pb2.STARTING: "Starting",
    agent_pb2.HEALTHY: "Healthy",
    agent_pb2.FAILED: "Failed",
    agent_pb2.ROLLED_BACK: "RolledBack",
    agent_pb2.REMOVED: "Removed",
    agent_pb2.RESTARTING: "Restarting",
}


def service_view(
    row: dict[str, Any],
    statuses: dict[str, dict[str, Any]],
    standings: list[dict[str, Any]],
    refusals: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The public view of one service: state, generation, and per-device phase and URIs.

    `row`: the service; `statuses`: its stored status per device; `standings`: the devices its
    target selects now (statuses of devices that left the target are on their way out);
    `refusals`: per device, the desired state it refused and still stands by (see FleetService).
    """
    refusals = refusals or {}
    generation = row["generation"]
    devices = []
    for standing in standings:
        device_id = standing["id"]
        st = statuses.get(device_id)
        current = st if st is not None and st["generation"] == generation else None  # its status now
        phase = PHASES.get(current["phase"], "Pending") if current is not None else "Pending"
        online = bool(standing["online"])
        waiting = "waiting for the device" + ("" if online else " (offline: it gets this when it connects)")
        message = current["message"] if current is not None else waiting
        refusal = refusals.get(device_id)
        if refusal is not None:  # what the device runs is unchanged; say so first, it matters most
            message = f"refused desired state revision {refusal['revision']}: {refusal['reason']}" + (
                f"; {message}" if message else ""
            )
        devices.append(
            {
                "device": device_id,
                "phase": phase,
                "generation": st["generation"] if st else 0,
                "serving_generation": st["serving_generation"] if st else 0,
                "scoring_uri": st["scoring_uri"] if st else "",
                "swagger_uri": st["swagger_uri"] if st else "",
                "message": message,
                "online": online,
                "log_tail": current["log_tail"] if current is not None else [],
                "restarts": st["restarts"] if st else 0,
                "refused": None
                if refusal is None
                else {
                    "revision": refusal["revision"],
                    "reason": refusal["reason"],
                    "at": _iso(refusal["refused_at"]),
                },
            }
        )
    spec = row["spec"]
    dc = parse_deployment_config(spec.get("deployment") or {})
    return {
        "name": row["name"],
        "state": overall_state([d["phase"] for d in devices]),
        "generation": generation,
        "target": row["target"],
        "models": spec["models"],
        "entry_script": (spec.get("inference") or {}).get("entry_script"),
        "auth": dc.auth_mode,
        # HTTPS: who issued the runtimes' certificates (the hub's CA, whose PEM DeploymentService.show adds, or
        # the user's own sslCertificate); None for plain HTTP.
        "tls": {"issuer": "user" if dc.ssl_certificate else "hub", "cname": dc.ssl_cname} if dc.ssl_enabled else None,
        "created": _iso(row["created_at"]),
        "updated": _iso(row["updated_at"]),
        "devices": devices,
    }


def overall_state(phases: list[str]) -> str:
    """A service's state from its devices' phases: Healthy, Failed, Unhealthy or Transitioning."""
    if phases and all(p == "Healthy" for p in phases):
        return "Healthy"
    if any(p in ("Failed", "RolledBack") for p in phases):
        return "Failed"
    if any(p == "Restarting" for p in phases):
        return "Unhealthy"  # it was serving; a runtime crashed and is being restarted
    return "Transitioning"


def device_services_view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Services on one device with their phases, from the device's status rows."""
    return [
        {
            "service": r["service"],
            "generation": r["generation"],
            "phase": PHASES.get(r["phase"], "Pending"),
            "scoring_uri": r["scoring_uri"],
        }
        for r in rows
    ]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
