"""Desired states an attacker could send a device, and the checks that it kept serving what it had.

`Attacks` makes, for one device: a state signed by another hub's key (forged), a genuine state with one
byte changed (tampered), a genuine state for another device, and a genuine but older state (a replay).
"Genuine" means signed with the hub's own key, read from its data dir: what an attacker could have
recorded from the wire, or from another device's channel.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hub.pki import CertificateAuthority
from hub.signing import ManifestSigner
from protos.edgeport.v1 import agent_pb2
from simulators.models import digits_data


@dataclass(frozen=True)
class Attack:
    """One desired state to slip to the device, what it claims, and the reason the agent must give."""

    name: str
    signed: agent_pb2.SignedDesiredState
    revision: int
    reason: str


def attacks(hub_pki: Path, scratch: Path, device: str, applied: int) -> list[Attack]:
    """Forged, tampered, wrong-device and replayed states for `device`, which has applied revision `applied`."""
    hub_signer = ManifestSigner(CertificateAuthority(hub_pki))
    other_hub = ManifestSigner(CertificateAuthority(scratch / "attacker-pki"))
    newer = applied + 10
    takeover = agent_pb2.DesiredState(revision=newer, device_id=device)  # "run nothing": stops every service
    forged = other_hub.sign(takeover)
    tampered = hub_signer.sign(agent_pb2.DesiredState(revision=newer, device_id=device, services=[]))
    body = bytearray(tampered.desired_state)
    body[-1] ^= 0x01  # the device id's last letter
    tampered.desired_state = bytes(body)
    wrong_device = hub_signer.sign(agent_pb2.DesiredState(revision=newer + 1, device_id=device + "-other"))
    replay = hub_signer.sign(agent_pb2.DesiredState(revision=applied - 1, device_id=device))
    return [
        Attack("forged", forged, newer, "signing certificate was not issued by this device's hub CA"),
        Attack("tampered", tampered, newer, "signature does not verify"),
        Attack("wrong device", wrong_device, newer + 1, f"it is for device '{device}-other', not this one"),
        Attack("replayed", replay, applied - 1, f"replay: revision {applied - 1} is older than the applied revision"),
    ]


def score_digits(uri: str) -> float:
    """POST five digits to a scoring URI; the share the model got right (a serving model gets >= 0.8)."""
    x, y = digits_data()
    body = json.dumps({"data": x[:5].tolist()}).encode()
    request = urllib.request.Request(uri, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        result = json.loads(r.read())
    labels = np.asarray(result.get("label", result) if isinstance(result, dict) else result).reshape(-1)[:5]
    return float((labels.astype(int) == y[:5]).mean())
