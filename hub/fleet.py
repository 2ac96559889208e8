"""FleetService: devices, labels, one-time enrollment tokens, enrollment, revocation, presence.

Token format (printed by `hub device enroll`): `ep1.<token_id>.<secret>.<ca_sha256_hex>`.
The secret is derived from a key kept in `DATA_DIR/pki/token.key` (HMAC of the token id),
so the database only ever holds its sha256: a copy of hub.db cannot enroll anything.
"""

from __future__ import annotations

import builtins  # below `def list`, a bare `list[...]` annotation in the class names that method
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

from google.protobuf import json_format

from hub.errors import Conflict, NotFound, Unauthorized
from hub.names import (
    DEFAULT_TOKEN_TTL_S,
    Target,
    check_token_lifetime,
    parse_labels,
    parse_target,
    validate_fleet_name,
)
from hub.pki import CertificateAuthority, common_name
from hub.signing import ManifestSigner
from hub.store.fleet import FleetStore
from protos.edgeport.v1 import agent_pb2


class FleetService:
    """Devices and their credentials; the core calls the presence methods, the API the rest."""

    def __init__(self, store: FleetStore, ca: CertificateAuthority, *, grpc_address: str = "127.0.0.1:7071") -> None:
        self.store = store
        self.ca = ca
        self.grpc_address = grpc_address
        self._token_key = _load_token_key(ca.dir / "token.key")
        self.signer = ManifestSigner(ca)  # signs every device's desired state; enrollment hands out its certificate
        # Set by the control core / MQTT bridge; default: nobody listens, no MQTT.
        self.on_device_changed: Callable[[str], None] = lambda device_id: None
        self.mqtt_credentials: Callable[[str], agent_pb2.MqttCredentials | None] = lambda device_id: None
        self.on_enrolled: list[Callable[[str], None]] = []  # e.g. deployments: recompute desired state
        self._issued: dict[bytes, tuple[str, str]] = {}  # sha256 of a verified certificate -> (device, serial)
        store.set_all_offline()

    # ---- enrollment ----

    def _secret(self, token_id: str) -> str:
        return hmac.new(self._token_key, token_id.encode(), hashlib.sha256).hexdigest()[:40]

    def create_token(
        self,
        device_id: str,
        labels: list[str] | dict[str, str],
        ttl_s: int = DEFAULT_TOKEN_TTL_S,
        *,
        replace: bool = False,
    ) -> dict[str, str]:
        """Register `device_id` (pending) and return `{"device", "token", "expires"}` (expires: ISO UTC).

        A revoked device's name is enrolled again only with `replace` (an admin's deliberate choice):
        otherwise whoever revoked it could find it back in the fleet by accident.
        """
        validate_fleet_name("device", device_id)
        parsed = parse_labels(labels)
        check_token_lifetime(ttl_s)
        existing = self.store.get(device_id)
        if existing is not None and existing["state"] == "enrolled":
            raise Conflict(f"device {device_id} is already enrolled; run `hub device revoke {device_id}` first")
        if existing is not None and existing["state"] == "revoked" and not replace:
            raise Conflict(
                f"device {device_id} was revoked; enrolling that name again needs --replace "
                f"(`hub device enroll {device_id} --replace`)"
            )
        token_id = secrets.token_hex(8)
        secret = self._secret(token_id)
        expires_at = time.time() + ttl_s
        secret_sha256 = hashlib.sha256(secret.encode()).hexdigest()
        self.store.create_enrollment(device_id, parsed, token_id, secret_sha256, expires_at)
        return {
            "device": device_id,
            "token": f"ep1.{token_id}.{secret}.{self.ca.ca_sha256}",
            "expires": _iso(expires_at),
        }

    def enroll(self, request: agent_pb2.EnrollRequest) -> agent_pb2.EnrollResponse:
        """Exchange a one-time token + CSR for a device certificate; raise Unauthorized/BadInput with the reason."""
        token = self.store.get_token(request.token_id)
        if token is None:
            raise Unauthorized("enrollment token is unknown to this hub (revoked, replaced, or from another hub)")
        device_id = token["device_id"]
        if token["used_at"] is not None:
            raise Unauthorized(f"enrollment token for device {device_id} was already used; issue a new one")
        if token["expires_at"] < time.time():
            raise Unauthorized(f"enrollment token for device {device_id} expired at {_iso(token['expires_at'])}")
        secret = self._secret(request.token_id)
        if not hmac.compare_digest(hashlib.sha256(secret.encode()).hexdigest(), token["secret_sha256"]):
            raise Unauthorized("enrollment token does not match this hub's token key")
        expected = hmac.new(secret.encode(), request.csr_pem, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, request.proof):
            raise Unauthorized("enrollment proof does not match the token's secret (wrong or altered token)")
        issued = self.ca.sign_csr(request.csr_pem, device_id)
        hardware = json.dumps(json_format.MessageToDict(request.hardware))
        if not self.store.complete_enrollment(
            request.token_id, device_id, issued.serial, issued.sha256, request.agent_version, hardware
        ):
            raise Unauthorized(f"enrollment token for device {device_id} was already used; issue a new one")
        for hook in self.on_enrolled:
            hook(device_id)
        response = agent_pb2.EnrollResponse(
            device_id=device_id,
            certificate_pem=issued.pem,
            ca_pem=self.ca.ca_pem,
            grpc_address=self.grpc_address,
            signing_certificate=self.signer.certificate_der,
        )
        mqtt = self.mqtt_credentials(device_id)
        if mqtt is not None:
            response.mqtt.CopyFrom(mqtt)
        return response

    def revoke(self, device_id: str) -> dict:
        """Revoke a device: its certificate is refused from now on and live sessions are closed."""
        if self.store.get(device_id) is None:
            raise NotFound(f"device {device_id} not found")
        self.store.revoke(device_id)
        self.on_device_changed(device_id)
        return self.show(device_id)

    # ---- authentication (control fronts) ----

    def authenticate_certificate(self, certificate_pem: bytes) -> str:
        """Device id of a client certificate this CA issued, still current and not revoked."""
        key = hashlib.sha256(certificate_pem).digest()
        issued = self._issued.get(key)
        if issued is None:
            # Whether this CA signed these bytes never changes: parse and check the signature once per
            # certificate, not on every reconnect (a fleet reconnecting at once pays it 10,000 times).
            cert = self.ca.verify(certificate_pem)
            if cert is None:
                raise Unauthorized("client certificate was not issued by this hub's CA")
            issued = (common_name(cert), format(cert.serial_number, "x"))
            if len(self._issued) >= 100_000:
                self._issued.clear()
            self._issued[key] = issued
        device_id, serial = issued
        if self.store.is_serial_revoked(serial):
            raise Unauthorized(f"device {device_id} is revoked")
        self._check_active(device_id, serial=serial)
        return device_id

    def authenticate_credential(self, device_id: str, credential: str) -> str:
        """--insecure / MQTT path: the credential is the hex sha256 of the device certificate's DER."""
        row = self._check_active(device_id)
        if not credential or not hmac.compare_digest(credential.lower(), row_cert(row)):
            raise Unauthorized(f"wrong credential for device {device_id}")
        return device_id

    def _check_active(self, device_id: str, serial: str | None = None) -> dict[str, Any]:
        row = self.store.standing(device_id)
        if row is None:
            raise Unauthorized(f"device {device_id} is not known to this hub")
        if row["state"] == "revoked":
            raise Unauthorized(f"device {device_id} is revoked")
        if row["state"] != "enrolled":
            raise Unauthorized(f"device {device_id} has not completed enrollment")
        if serial is not None and serial != row["cert_serial"]:
            raise Unauthorized(f"certificate of device {device_id} was superseded by a newer enrollment")
        return row

    def enrolled_count(self) -> int:
        """How many devices may connect: enrolled, not revoked."""
        return self.store.count_enrolled()

    def is_active(self, device_id: str) -> bool:
        """Enrolled and not revoked."""
        row = self.store.standing(device_id)
        return row is not None and row["state"] == "enrolled"

    def standing(self, device_id: str) -> dict[str, Any] | None:
        """State, labels and desired revision/fingerprint of one device (None if unknown)."""
        return self.store.standing(device_id)

    def standings(self, device_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """`standing` of every device, or of the given ones (unknown ids are left out)."""
        return self.store.standings(device_ids)

    # ---- presence (control core) ----

    def device_connected(self, device_id: str, hello: agent_pb2.Hello, transport: str) -> int:
        """Record a Hello; return the device's cumulative ack."""
        now = time.time()
        fields: dict[str, Any] = {"online": 1, "transport": transport, "last_seen_at": now, "last_heartbeat_at": now}
        if hello.agent_version:
            fields["agent_version"] = hello.agent_version
        if hello.desired_revision:  # what it runs on: its ack of that revision may not have reached us
            fields["applied_revision"] = hello.desired_revision
        if hello.HasField("hardware"):
            fields["hardware"] = json.dumps(json_format.MessageToDict(hello.hardware))
        self.store.update(device_id, **fields)
        row = self.store.get(device_id)
        return int(row["acked_seq"]) if row else 0

    def device_disconnected(self, device_id: str) -> None:
        """The device's last session ended."""
        self.store.update(device_id, online=0, last_seen_at=time.time())

    def record_heartbeat(self, device_id: str, heartbeat: agent_pb2.Heartbeat) -> None:
        """A heartbeat arrived."""
        now = time.time()
        self.store.update(device_id, last_heartbeat_at=now, last_seen_at=now, uptime_s=heartbeat.uptime_s)

    def record_applied_revision(self, device_id: str, revision: int) -> None:
        """The agent applied a DesiredState revision (a DesiredStateAck, or a status that names it). When it was
        last seen, the message's seq already recorded (`record_seq`)."""
        self.store.update_applied_revision(device_id, revision)

    def record_refusal(self, device_id: str, refused: agent_pb2.DesiredStateRefused) -> None:
        """The device refused a desired state (it keeps running what it had): keep why, for `hub service show`."""
        reason = refused.reason[:500] or "no reason given"  # the agent's words, bounded
        self.store.put_refusal(device_id, refused.revision, reason, refused.applied_revision)

    def current_refusals(self, device_ids: builtins.list[str]) -> dict[str, dict[str, Any]]:
        """{device: {revision, reason, applied_revision, refused_at}} for refusals no newer revision replaced."""
        return self.store.current_refusals(device_ids)

    def record_seq(self, device_id: str, seq: int, floor: int | None = None) -> tuple[bool, int]:
        """Dedup by (device, seq): (first time, cumulative ack)."""
        return self.store.record_seq(device_id, seq, floor)

    def forget_seqs(self, device_ids: set[str] | list[str]) -> None:
        """A transaction that recorded seqs of these devices was rolled back: re-read their acks."""
        self.store.forget_seqs(device_ids)

    # ---- queries ----

    def get(self, device_id: str) -> dict[str, Any]:
        """Raw device row; NotFound if absent."""
        row = self.store.get(device_id)
        if row is None:
            raise NotFound(f"device {device_id} not found")
        return row

    def show(self, device_id: str) -> dict[str, Any]:
        """The public view of one device."""
        return _public(self.get(device_id))

    def list(self) -> list[dict[str, Any]]:
        """Public views of every device."""
        return [_public(r) for r in self.store.list()]

    def active_ids(self) -> builtins.list[str]:
        """Ids of enrolled or pending (not revoked) devices."""
        return [r["id"] for r in self.store.standings() if r["state"] != "revoked"]

    def select(self, selector: str) -> builtins.list[str]:
        """Non-revoked devices a target selects: a device name, or `k=v[,k=v...]` (all must match)."""
        return [r["id"] for r in self.select_standings(selector)]

    def select_standings(self, selector: str) -> builtins.list[dict[str, Any]]:
        """`standing` (with `online`) of every device `select(selector)` names, in one read."""
        return [r for r in self.store.standings() if selects(r, selector)]

    def matches(self, device_id: str, selector: str) -> bool:
        """Whether `select(selector)` would include `device_id`, reading only that device's row."""
        row = self.store.standing(device_id)
        return row is not None and selects(row, selector)

    def set_desired(self, device_id: str, fingerprint: str) -> int:
        """Bump the device's desired revision when its (service, generation) set changed."""
        return self.store.set_desired(device_id, fingerprint)

    def set_desired_many(self, fingerprints: dict[str, str]) -> dict[str, int]:
        """`set_desired` for many devices in one transaction; {device: revision}."""
        return self.store.set_desired_many(fingerprints)


def selects(standing: dict[str, Any], selector: str) -> bool:
    """Whether a target selector (a device name, or `k=v[,k=v...]`) picks this non-revoked device row."""
    if standing["state"] == "revoked":
        return False
    target = _stored_target(selector)
    if target.device is not None:
        return standing["id"] == target.device
    return all(standing["labels"].get(k) == v for k, v in target.labels.items())


@functools.lru_cache(maxsize=256)
def _stored_target(selector: str) -> Target:
    # Targets are checked with parse_target before they are stored; one stored while a stray comma
    # was still let through (`site=lab,`) keeps selecting what it selected then.
    return parse_target(",".join(term for term in selector.split(",") if term.strip()))


def row_cert(row: dict[str, Any]) -> str:
    """The device certificate fingerprint stored at enrollment ('' before)."""
    return row.get("cert_sha256") or ""


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["id"],
        "state": row["state"],
        "labels": row["labels"],
        "online": bool(row["online"]),
        "transport": row["transport"],
        "agent_version": row["agent_version"],
        "hardware": row["hardware"],
        "created": _iso(row["created_at"]),
        "enrolled": _iso(row["enrolled_at"]),
        "revoked": _iso(row["revoked_at"]),
        "last_seen": _iso(row["last_seen_at"]),
        "last_heartbeat": _iso(row["last_heartbeat_at"]),
        "uptime_s": row["uptime_s"],
        "desired_revision": row["desired_revision"],
        "applied_revision": row["applied_revision"],
    }


# Overloads: a timestamp that is there always formats to a string (create_token's "expires").
@overload
def _iso(ts: float) -> str: ...
@overload
def _iso(ts: float | None) -> str | None: ...
def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _load_token_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
