"""Broker credentials and ACL: the files mosquitto reads (`password_file`, `acl_file`), kept by the hub.

Each enrolled device gets its own broker user (username = device id). Its password is
derived, not stored: HMAC(hub key, device id + certificate fingerprint), so the files
can be rebuilt from the fleet at any time (level-triggered) and a re-enrolled device
gets a new one. The password file holds only PBKDF2-SHA512 hashes in mosquitto's `$7$`
format. The ACL gives each device read on its own desired/inbox topics and write on its
own reported/online topics, nothing else; the hub's user reads and writes all under the
prefix. After a change the files are replaced atomically and mosquitto is sent SIGHUP
(it re-reads both and re-checks connected clients).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from protos.mqtt import Topics

log = logging.getLogger("hub.control.mqtt")

# Starts with '_' so no device can ever be called this (device names start with a letter or digit).
HUB_USERNAME = "_edgeport-hub"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$; a broker checks it on every CONNECT
PASSWORD_FILE, ACL_FILE, PID_FILE, KEY_FILE = "passwords", "acl", "mosquitto.pid", "mqtt.key"


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A mosquitto 2.x password-file hash: `$7$<iterations>$<salt b64>$<pbkdf2-sha512 b64>`."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """The latest change to the broker users: a device the broker should now accept (`present`) or refuse,
    with the password to ask it with (see hub.control.mqtt_probe)."""

    username: str
    password: str
    present: bool


class BrokerAuth:
    """Device users and the ACL in `directory`; `reload()` tells the broker (pid in `mosquitto.pid`)."""

    def __init__(self, directory: Path, topics: Topics, *, key: bytes | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.topics = topics
        self._key = key if key is not None else _load_key(self.dir / KEY_FILE)
        self._lock = threading.Lock()
        self._devices: dict[str, tuple[str, str]] = {}  # device -> (credential seed, password hash)
        self._latest: CredentialChange | None = None  # since the files were last written
        self._hub_hash = hash_password(self.hub_password)

    @property
    def hub_password(self) -> str:
        """The hub's own broker password (derived from the key, so stable across restarts)."""
        return hmac.new(self._key, b"hub", hashlib.sha256).hexdigest()

    def device_password(self, device_id: str, seed: str) -> str:
        """The broker password of `device_id`; `seed` changes when the device is re-enrolled (cert fingerprint)."""
        return hmac.new(self._key, f"device:{device_id}:{seed}".encode(), hashlib.sha256).hexdigest()

    def set_devices(self, devices: dict[str, str]) -> None:
        """Make the broker users exactly `devices` (id -> seed); hashes are reused for unchanged devices."""
        with self._lock:
            kept = {d: v for d, v in self._devices.items() if devices.get(d) == v[0]}
            for device_id, seed in devices.items():
                if device_id not in kept and device_id != HUB_USERNAME:
                    kept[device_id] = (seed, hash_password(self.device_password(device_id, seed)))
            self._devices = kept

    def add_device(self, device_id: str, seed: str) -> str:
        """Add or renew one device user; returns its password (call `write()` + `reload()` after)."""
        password = self.device_password(device_id, seed)
        with self._lock:
            self._devices[device_id] = (seed, hash_password(password))
            self._latest = CredentialChange(device_id, password, present=True)
        return password

    def remove_device(self, device_id: str) -> None:
        """Drop a device user (revocation); call `write()` + `reload()` after."""
        with self._lock:
            gone = self._devices.pop(device_id, None)
            if gone is not None:
                self._latest = CredentialChange(device_id, self.device_password(device_id, gone[0]), present=False)

    def devices(self) -> list[str]:
        """Device ids that have a broker user now."""
        with self._lock:
            return sorted(self._devices)

    def write(self) -> CredentialChange | None:
        """Replace the password and ACL files atomically (the broker never reads a half-written file); returns
        the latest device added or removed since the last write (None: none), to ask the broker about."""
        with self._lock:
            devices = sorted(self._devices.items())
            latest, self._latest = self._latest, None
        lines = [f"{HUB_USERNAME}:{self._hub_hash}"] + [f"{d}:{h}" for d, (_, h) in devices]
        _replace(self.dir / PASSWORD_FILE, "\n".join(lines) + "\n")
        t = self.topics
        acl = [
            "# written by the Edgeport hub; edits are overwritten",
            f"user {HUB_USERNAME}",
            f"topic readwrite {t.prefix}/#",
            "",
        ]
        for device_id, _ in devices:
            acl += [
                f"user {device_id}",
                f"topic read {t.desired(device_id)}",
                f"topic read {t.inbox(device_id)}",
                f"topic write {t.reported(device_id)}",
                f"topic write {t.online(device_id)}",
                "",
            ]
        _replace(self.dir / ACL_FILE, "\n".join(acl))
        return latest

    def reload(self) -> bool:
        """SIGHUP the broker named in `mosquitto.pid`; False when no broker runs from this directory."""
        try:
            pid = int((self.dir / PID_FILE).read_text().strip())
            os.kill(pid, signal.SIGHUP)
            return True
        except (OSError, ValueError):
            return False


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:  # no fsync: the files are rebuilt from the fleet at every hub start
        fh.write(text)
    # mosquitto runs as whoever started it; the files hold only hashes, so group/other read is harmless
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def _load_key(path: Path) -> bytes:
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
