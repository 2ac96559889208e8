"""Per-device desired state: which services' manifests a device should run, under one revision.

A device's DesiredState is every active service whose target selects it. Its revision grows
whenever that set of (service, generation) pairs changes, recognised by a fingerprint of the set,
so an agent can tell a newer desired state from one it already applied. A service with TLS also carries
what was issued for that one device (hub/deployments/tls.py), so its arrival is a new revision too.
What the fronts send is the signed form (`signed_states`): the state names its device, and the hub's
manifest-signing key (hub/signing.py) signs its exact bytes, so the agent can check both before it applies anything.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hub.deployments.tls import ServiceCertificates
from hub.fleet import FleetService, selects
from hub.store.deployments import DeploymentStore
from protos.edgeport.v1 import agent_pb2

# A set of (service, generation) pairs, as a DesiredState's services are keyed while they are built.
ServiceSet = tuple[tuple[str, int], ...]


def fingerprint(services: list[tuple[str, int]], tls: dict[str, str] | None = None, signing_key: str = "") -> str:
    """What a device's desired revision stands for: its set of (service, generation), for services with
    TLS the digest of what was issued to it (`tls`: service -> digest), and the key that signs it — so a
    rotated key reaches every device with a new revision, which agents take up (a repeat they ignore)."""
    tls = tls or {}
    parts = (f"{name}:{generation}" + (f":{tls[name]}" if name in tls else "") for name, generation in services)
    return hashlib.sha256(f"{signing_key};{','.join(parts)}".encode()).hexdigest()


class DesiredStates:
    """Computes devices' desired service sets, keeps their revisions, and builds their DesiredState messages."""

    def __init__(self, store: DeploymentStore, fleet: FleetService) -> None:
        self.store = store
        self.fleet = fleet
        self.tls = ServiceCertificates(store, fleet)

    def services_for(self, standing: dict[str, Any] | None) -> list[tuple[str, int]]:
        """(service, generation) of every active service whose target selects this device row."""
        if standing is None or standing["state"] != "enrolled":
            return []
        return [(name, generation) for name, generation, target in self.store.targets() if selects(standing, target)]

    def refresh(self, device_ids: list[str] | None = None) -> list[str]:
        """Recompute the devices' desired sets and bump revisions that changed (one transaction).

        Returns the devices the fronts should be told about (every one looked at).
        """
        tls = self.tls.digests(device_ids)
        fingerprints = {
            row["id"]: fingerprint(self.services_for(row), tls.get(row["id"]), self.fleet.signer.key_id)
            for row in self.fleet.standings(device_ids)
            if row["state"] != "revoked"
        }
        self.fleet.set_desired_many(fingerprints)
        return list(fingerprints) if device_ids is None else list(device_ids)

    def desired_state(self, device_id: str) -> agent_pb2.DesiredState:
        """The complete set of manifests for one device, with its current revision."""
        return self._desired(device_id, self.fleet.standing(device_id), {}, self.store.certificates([device_id]))

    def desired_states(self, device_ids: list[str]) -> dict[str, agent_pb2.DesiredState]:
        """`desired_state` of every enrolled device among `device_ids` (others are left out), reading the
        devices' rows in one pass and building each distinct set of services once: a rollout to 10,000
        devices asks for all of them at once."""
        built: dict[ServiceSet, bytes] = {}
        certificates = self.store.certificates(device_ids)
        return {
            row["id"]: self._desired(row["id"], row, built, certificates)
            for row in self.fleet.standings(device_ids)
            if row["state"] == "enrolled"
        }

    def _desired(
        self,
        device_id: str,
        standing: dict[str, Any] | None,
        built: dict[ServiceSet, bytes],
        certificates: dict[str, dict[str, dict[str, Any]]],
    ) -> agent_pb2.DesiredState:
        services = self.services_for(standing)
        issued = certificates.get(device_id, {})
        tls = {service: row["sha256"] for service, row in issued.items()}
        current = fingerprint(services, tls, self.fleet.signer.key_id)
        if standing is not None and standing["desired_fingerprint"] == current:
            revision = standing["desired_revision"]  # the usual case: refresh() already stored it
        else:
            revision = self.fleet.set_desired(device_id, current)
        key = tuple(services)
        body = built.get(key)
        if body is None:  # the services part, serialized once per distinct set
            part = agent_pb2.DesiredState()
            for name, generation in services:
                blob = self.store.manifest(name, generation)
                if blob is not None:
                    part.services.add().MergeFromString(blob)
            body = built[key] = part.SerializeToString()
        state = agent_pb2.DesiredState(revision=revision, device_id=device_id)
        state.MergeFromString(body)
        self.tls.fill(state, issued)
        return state

    def signed_state(self, device_id: str) -> agent_pb2.SignedDesiredState:
        """`desired_state`, signed for the device."""
        return self.fleet.signer.sign(self.desired_state(device_id))

    def signed_states(self, device_ids: list[str]) -> dict[str, agent_pb2.SignedDesiredState]:
        """`desired_states`, each signed for its device (one Ed25519 signature per device)."""
        sign = self.fleet.signer.sign
        return {device: sign(state) for device, state in self.desired_states(device_ids).items()}
