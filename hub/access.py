"""Who may do what on the hub: API tokens with roles, device pull tokens, and the audit log.

API tokens are `ept_` + 32 random bytes (URL-safe base64), shown once and stored only as their
sha256. A plain hash (no salt, no slow KDF) is enough because the tokens are high-entropy random
values, not passwords a person chose: nobody can guess one from its hash, and a fast hash keeps
the check on every request cheap. Roles are ordered: viewer < deployer < admin.

Device pull tokens (`epd.<device>.<hmac>`) let an enrolled agent pull blobs over the OCI endpoint
without an API token: an HMAC of the device id and its current certificate serial under a key kept
in the data dir, so they need no table, die with a revocation or a re-enrollment, and are only
accepted for GET/HEAD under /v2/ (the REST front decides that).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import BadInput, NotFound, Unauthorized
from hub.names import validate_fleet_name

if TYPE_CHECKING:  # the store is handed in; importing it here would load SQL into `hub --help` (hub/cli)
    from hub.store.access import AccessStore

log = logging.getLogger("hub.access")

ROLES = ("viewer", "deployer", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
TOKEN_PREFIX = "ept_"
DEVICE_TOKEN_PREFIX = "epd."
DEFAULT_TOKEN_TTL_S = 90 * 86400
MAX_TOKEN_TTL_S = 5 * 365 * 86400
ADMIN_TOKEN_FILE = "admin.token"
BOOTSTRAP_TOKEN_NAME = "admin"
DEFAULT_AUDIT_RETENTION_S = 90 * 86400
DEFAULT_AUDIT_MAX_ROWS = 1_000_000  # about 150 MB at most: bounded even when refusals pour in
TRIM_EVERY = 1000  # audit records written between two retention passes
CACHE_S = 5.0  # how long a checked credential is trusted without reading the database again


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role, or a device (`device:<id>`, role `device`)."""

    name: str
    role: str
    expires_at: float = float("inf")

    @property
    def is_device(self) -> bool:
        """A device pull token: good for OCI pulls only."""
        return self.role == "device"

    def allows(self, needed: str) -> bool:
        """True when this caller's role is `needed` or above (a device has no API role)."""
        return not self.is_device and RANK[self.role] >= RANK[needed]


def hash_token(token: str) -> str:
    """Hex sha256 of a token, the only form stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    """`role` if it is one of viewer, deployer, admin; BadInput otherwise."""
    if role not in RANK:
        raise BadInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_key(path: Path) -> bytes:
    """The device pull token key, created (0600) on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key


class AccessService:
    """API tokens, device pull tokens and the audit log of one hub."""

    def __init__(
        self,
        store: AccessStore,
        data_dir: Path,
        device_cert_serial: Callable[[str], str | None],
        *,
        audit_retention_s: int = DEFAULT_AUDIT_RETENTION_S,
        audit_max_rows: int = DEFAULT_AUDIT_MAX_ROWS,
    ) -> None:
        """`device_cert_serial(device_id)`: the serial of an enrolled device's current certificate, else None."""
        self.store = store
        self.data_dir = Path(data_dir)
        self.device_cert_serial = device_cert_serial
        self.audit_retention_s = audit_retention_s
        self.audit_max_rows = audit_max_rows
        self._device_key = _load_key(self.data_dir / "pull-token.key")
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Principal | None]] = {}  # sha256 -> (checked at, principal)
        self._written = 0

    # ---- API tokens ----

    def create_token(self, name: str, role: str, ttl_s: int = DEFAULT_TOKEN_TTL_S) -> dict[str, Any]:
        """Create a token: `{"name", "role", "token", "expires"}`; the token itself is never shown again."""
        validate_fleet_name("token", name)
        check_role(role)
        if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
            raise BadInput(f"token lifetime (expires) must be 1 s to 5 years, got {ttl_s} s")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        self.store.insert_token(name, role, hash_token(token), now, now + ttl_s)
        return {"name": name, "role": role, "token": token, "expires": _iso(now + ttl_s)}

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token with its role, state and times (never the token or its hash)."""
        now = time.time()
        out = []
        for row in self.store.list_tokens():
            state = "revoked" if row["revoked_at"] else ("expired" if row["expires_at"] <= now else "active")
            out.append(
                {
                    "name": row["name"],
                    "role": row["role"],
                    "state": state,
                    "created": _iso(row["created_at"]),
                    "expires": _iso(row["expires_at"]),
                    "revoked": _iso(row["revoked_at"]) if row["revoked_at"] else None,
                }
            )
        return out

    def revoke_token(self, name: str) -> dict[str, Any]:
        """Revoke a token by name: refused from the next request on."""
        digest = self.store.revoke_token(name, time.time())
        if digest is None:
            raise NotFound(f"no token named {name!r}")
        with self._lock:
            self._cache.pop(digest, None)
        return next(t for t in self.list_tokens() if t["name"] == name)

    def ensure_admin_token(self) -> str | None:
        """Make sure an admin can get in: when no active admin token exists (a new data dir, or every
        admin token revoked or expired), create one, write it to `DATA_DIR/admin.token` (0600) and
        return it; otherwise None. Whoever can read the data dir owns the hub anyway."""
        if self.store.count_active("admin", time.time()):
            return None
        name = BOOTSTRAP_TOKEN_NAME
        taken = {t["name"] for t in self.store.list_tokens()}
        n = 1
        while name in taken:
            n += 1
            name = f"{BOOTSTRAP_TOKEN_NAME}-{n}"
        token = self.create_token(name, "admin")["token"]
        path = self.data_dir / ADMIN_TOKEN_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
        return token

    def authenticate(self, token: str) -> Principal:
        """The caller behind a bearer token (API or device pull token); Unauthorized with the reason."""
        token = token.strip()
        if token.startswith(DEVICE_TOKEN_PREFIX):
            return self._device(token)
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthorized("that is not a hub API token (they start with ept_)")
        digest = hash_token(token)
        now = time.time()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            principal = cached[1]
        else:
            row = self.store.token_by_hash(digest)
            principal = None
            if row is not None and row["revoked_at"] is None:
                principal = Principal(row["name"], row["role"], row["expires_at"])
            elif row is not None:
                principal = Principal(row["name"], "revoked", 0.0)
            with self._lock:
                if len(self._cache) > 10_000:  # bounded: a flood of made-up tokens cannot grow it
                    self._cache.clear()
                self._cache[digest] = (now, principal)
        if principal is None:
            raise Unauthorized("the API token is not known to this hub")
        if principal.role == "revoked":
            raise Unauthorized(f"the API token {principal.name!r} was revoked")
        if principal.expires_at <= now:
            raise Unauthorized(f"the API token {principal.name!r} expired at {_iso(principal.expires_at)}")
        return principal

    # ---- device pull tokens ----

    def device_pull_token(self, device_id: str) -> str:
        """The pull token of an enrolled device's current certificate (given to the agent at enrollment)."""
        serial = self.device_cert_serial(device_id)
        if serial is None:
            raise NotFound(f"device {device_id} is not enrolled")
        return f"{DEVICE_TOKEN_PREFIX}{device_id}.{self._device_mac(device_id, serial)}"

    def _device_mac(self, device_id: str, serial: str) -> str:
        return hmac.new(self._device_key, f"{device_id}\0{serial}".encode(), hashlib.sha256).hexdigest()

    def _device(self, token: str) -> Principal:
        device_id, _, mac = token[len(DEVICE_TOKEN_PREFIX):].rpartition(".")
        now = time.time()
        key = "device:" + hash_token(token)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_S and cached[1] is not None:
            return cached[1]
        serial = self.device_cert_serial(device_id) if device_id else None
        if serial is None or not hmac.compare_digest(mac, self._device_mac(device_id, serial)):
            raise Unauthorized("the device pull token is not valid (device revoked, re-enrolled or unknown)")
        principal = Principal(f"device:{device_id}", "device")
        with self._lock:
            self._cache[key] = (now, principal)
        return principal

    # ---- audit ----

    def record(self, rows: list[tuple[float, str, str, str, int, str]]) -> None:
        """Append audit records (at, who, source, action, status, result); trims now and then."""
        self.store.insert_audit(rows)
        with self._lock:
            self._written += len(rows)
            trim = self._written >= TRIM_EVERY
            if trim:
                self._written = 0
        if trim:
            self.trim()

    def trim(self) -> int:
        """Apply the retention time and the size bound now; how many records went."""
        return self.store.trim_audit(time.time() - self.audit_retention_s, self.audit_max_rows)

    def audit(self, since_s: float | None = None, who: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Audit records, newest first: `since_s` seconds back from now, by token name."""
        since = time.time() - since_s if since_s is not None else None
        rows = self.store.query_audit(since, who, limit)
        for row in rows:
            row["at"] = datetime.fromtimestamp(row["at"], UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return rows
