"""Fleet tables: devices, enrollment tokens (hashed), revoked certificates, agent sequence numbers,
the last desired state each device refused."""

from __future__ import annotations

import builtins  # below `def list`, a bare `list[...]` annotation in the class names that method
import json
import time
from typing import Any

import sqlite_utils

from hub.store.db import Database


def create_tables(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS devices (
            id TEXT PRIMARY KEY,
            labels TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL,                 -- pending | enrolled | revoked
            created_at REAL NOT NULL,
            enrolled_at REAL,
            revoked_at REAL,
            cert_serial TEXT,
            cert_sha256 TEXT,
            agent_version TEXT,
            hardware TEXT,                       -- JSON of HardwareInventory
            online INTEGER NOT NULL DEFAULT 0,
            transport TEXT,
            last_seen_at REAL,
            last_heartbeat_at REAL,
            uptime_s INTEGER,
            acked_seq INTEGER NOT NULL DEFAULT 0,
            desired_revision INTEGER NOT NULL DEFAULT 0,
            desired_fingerprint TEXT NOT NULL DEFAULT '',
            applied_revision INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS enrollment_tokens (
            id TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        );
        CREATE TABLE IF NOT EXISTS revoked_certificates (
            serial TEXT PRIMARY KEY,
            device_id TEXT NOT NULL,
            revoked_at REAL NOT NULL
        );
        -- seqs stored above a device's cumulative ack (out-of-order arrivals)
        CREATE TABLE IF NOT EXISTS agent_seqs (
            device_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (device_id, seq)
        );
        -- the last desired state a device refused (bad signature, another device's, a replay), and why
        CREATE TABLE IF NOT EXISTS desired_refusals (
            device_id TEXT PRIMARY KEY,
            revision INTEGER NOT NULL,           -- as the refused state claimed it (unverified)
            reason TEXT NOT NULL,
            applied_revision INTEGER NOT NULL,   -- what the device kept running
            refused_at REAL NOT NULL
        );
        """
    )


def _row(db: sqlite_utils.Database, device_id: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM devices WHERE id = ?", [device_id]))
    if not rows:
        return None
    row = rows[0]
    row["labels"] = json.loads(row["labels"])
    row["hardware"] = json.loads(row["hardware"]) if row["hardware"] else None
    return row


_STANDING = (
    "SELECT id, state, labels, cert_serial, cert_sha256, desired_revision, desired_fingerprint, online FROM devices"
)


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    # SQLite caps the number of ? parameters per statement.
    return [items[i : i + size] for i in range(0, len(items), size)]


class FleetStore:
    """SQL for devices and their credentials; `FleetService` holds the rules."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # device -> [cumulative ack, seqs held above it]: read once, then kept in step with every write.
        # The data-dir lock makes this process the only writer, so the cache cannot go stale behind us.
        self._seqs: dict[str, list] = {}

    def get(self, device_id: str) -> dict[str, Any] | None:
        """One device row (labels and hardware decoded), or None."""
        with self.database.read() as db:
            return _row(db, device_id)

    def standing(self, device_id: str) -> dict[str, Any] | None:
        """The cheap part of a device row (state, labels, certificate, desired revision), or None.

        What the control channel reads per device and message; `get` also decodes the hardware inventory.
        """
        with self.database.snapshot() as db:
            rows = list(db.query(_STANDING + " WHERE id = ?", [device_id]))
        if not rows:
            return None
        rows[0]["labels"] = json.loads(rows[0]["labels"])
        return rows[0]

    def standings(self, device_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """`standing` of every device (or of the given ones), by name, in as few queries as it takes."""
        with self.database.snapshot() as db:
            if device_ids is None:
                rows = list(db.query(_STANDING + " ORDER BY id"))
            else:
                rows = [
                    r
                    for chunk in _chunks(device_ids)
                    for r in db.query(f"{_STANDING} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
                ]
                rows.sort(key=lambda r: r["id"])
        for r in rows:
            r["labels"] = json.loads(r["labels"])
        return rows

    def count_enrolled(self) -> int:
        """How many devices are enrolled (not pending, not revoked)."""
        with self.database.snapshot() as db:
            return int(next(iter(db.query("SELECT count(*) AS n FROM devices WHERE state = 'enrolled'")))["n"])

    def list(self) -> list[dict[str, Any]]:
        """Every device, by name."""
        with self.database.read() as db:
            ids = [r["id"] for r in db.query("SELECT id FROM devices ORDER BY id")]
            return [r for r in (_row(db, i) for i in ids) if r is not None]

    def create_enrollment(
        self, device_id: str, labels: dict[str, str], token_id: str, secret_sha256: str, expires_at: float
    ) -> None:
        """Add (or re-open a revoked) device as pending with a fresh one-time token, in one transaction."""
        now = time.time()
        with self.database.transaction() as db:
            if _row(db, device_id) is None:
                row = {"id": device_id, "labels": json.dumps(labels), "state": "pending", "created_at": now}
                db.table("devices").insert(row)
            else:
                db.execute(
                    "UPDATE devices SET labels = ?, state = 'pending', revoked_at = NULL, online = 0 WHERE id = ?",
                    [json.dumps(labels), device_id],
                )
            # A new token replaces any unused older one for the same device.
            db.execute("DELETE FROM enrollment_tokens WHERE device_id = ? AND used_at IS NULL", [device_id])
            db.table("enrollment_tokens").insert(
                {
                    "id": token_id,
                    "device_id": device_id,
                    "secret_sha256": secret_sha256,
                    "created_at": now,
                    "expires_at": expires_at,
                    "used_at": None,
                }
            )

    def get_token(self, token_id: str) -> dict[str, Any] | None:
        """One enrollment token row, or None."""
        with self.database.read() as db:
            rows = list(db.query("SELECT * FROM enrollment_tokens WHERE id = ?", [token_id]))
            return rows[0] if rows else None

    def complete_enrollment(
        self, token_id: str, device_id: str, cert_serial: str, cert_sha256: str, agent_version: str, hardware: str
    ) -> bool:
        """Burn the token and mark the device enrolled, atomically; False if the token was used meanwhile."""
        now = time.time()
        with self.database.transaction() as db:
            cur = db.execute(
                "UPDATE enrollment_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL", [now, token_id]
            )
            if cur.rowcount != 1:
                return False
            db.execute(
                "UPDATE devices SET state = 'enrolled', enrolled_at = ?, cert_serial = ?, cert_sha256 = ?,"
                " agent_version = ?, hardware = ?, acked_seq = 0 WHERE id = ?",
                [now, cert_serial, cert_sha256, agent_version, hardware, device_id],
            )
            db.execute("DELETE FROM agent_seqs WHERE device_id = ?", [device_id])
            db.execute("DELETE FROM desired_refusals WHERE device_id = ?", [device_id])
            self._seqs.pop(device_id, None)
            return True

    def revoke(self, device_id: str) -> None:
        """Mark the device revoked, add its certificate to the revocation list, void unused tokens."""
        now = time.time()
        with self.database.transaction() as db:
            row = _row(db, device_id)
            if row is None:
                return
            db.execute(
                "UPDATE devices SET state = 'revoked', revoked_at = ?, online = 0 WHERE id = ?", [now, device_id]
            )
            if row["cert_serial"]:
                db.execute(
                    "INSERT OR IGNORE INTO revoked_certificates (serial, device_id, revoked_at) VALUES (?, ?, ?)",
                    [row["cert_serial"], device_id, now],
                )
            db.execute("DELETE FROM enrollment_tokens WHERE device_id = ? AND used_at IS NULL", [device_id])

    def is_serial_revoked(self, serial: str) -> bool:
        """Whether a certificate serial is on the revocation list."""
        with self.database.snapshot() as db:
            return bool(list(db.query("SELECT 1 FROM revoked_certificates WHERE serial = ?", [serial])))

    def update(self, device_id: str, **fields: Any) -> None:
        """Set plain columns of one device."""
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.database.read() as db:
            db.execute(f"UPDATE devices SET {cols} WHERE id = ?", [*fields.values(), device_id])

    def update_applied_revision(self, device_id: str, revision: int) -> None:
        """Set the device's applied revision; no write when it is the one stored (every status names it)."""
        with self.database.read() as db:
            db.execute(
                "UPDATE devices SET applied_revision = ? WHERE id = ? AND applied_revision != ?",
                [revision, device_id, revision],
            )

    def put_refusal(self, device_id: str, revision: int, reason: str, applied_revision: int) -> None:
        """Keep the device's latest refusal of a desired state (replacing the one before)."""
        with self.database.read() as db:
            db.execute(
                "INSERT OR REPLACE INTO desired_refusals (device_id, revision, reason, applied_revision, refused_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [device_id, revision, reason, applied_revision, time.time()],
            )

    def current_refusals(self, device_ids: builtins.list[str]) -> dict[str, dict[str, Any]]:
        """Refusals of these devices that still stand: the device has applied no newer revision since."""
        out: dict[str, dict[str, Any]] = {}
        with self.database.snapshot() as db:
            for chunk in _chunks(device_ids):
                marks = ", ".join("?" * len(chunk))
                for r in db.query(
                    "SELECT r.device_id, r.revision, r.reason, r.applied_revision, r.refused_at"
                    " FROM desired_refusals r JOIN devices d ON d.id = r.device_id"
                    f" WHERE r.applied_revision >= d.applied_revision AND r.device_id IN ({marks})",
                    chunk,
                ):
                    out[r.pop("device_id")] = r
        return out

    def set_all_offline(self) -> None:
        """At hub start nobody is connected yet."""
        with self.database.read() as db:
            db.execute("UPDATE devices SET online = 0")

    def record_seq(self, device_id: str, seq: int, floor: int | None) -> tuple[bool, int]:
        """Store `seq` once; return (first time seen, cumulative ack). `floor` lifts the ack past lost seqs.

        Usually one UPDATE: the ack and the held seqs are cached, and a seq right after the
        ack (the common, in-order case) never touches `agent_seqs`.
        """
        with self.database.transaction() as db:
            state = self._seqs.get(device_id)
            if state is None:
                rows = list(db.query("SELECT acked_seq FROM devices WHERE id = ?", [device_id]))
                if not rows:
                    return False, 0
                held_rows = db.query("SELECT seq FROM agent_seqs WHERE device_id = ?", [device_id])
                state = [rows[0]["acked_seq"], {r["seq"] for r in held_rows}]
            acked, held = state[0], set(state[1])
            start, stored_held = acked, bool(held)
            if floor is not None and floor > acked:
                acked = floor
            fresh = seq > acked and seq not in held
            if fresh:
                held.add(seq)
            while acked + 1 in held:
                acked += 1
            held = {s for s in held if s > acked}
            if fresh and seq in held:  # arrived ahead of a gap: remember it on disk too
                db.execute("INSERT INTO agent_seqs (device_id, seq) VALUES (?, ?)", [device_id, seq])
            if acked != start:  # the device was heard from: agents send heartbeats only when quiet
                db.execute(
                    "UPDATE devices SET acked_seq = ?, last_seen_at = ? WHERE id = ?", [acked, time.time(), device_id]
                )
                if stored_held:
                    db.execute("DELETE FROM agent_seqs WHERE device_id = ? AND seq <= ?", [device_id, acked])
            # Cached only now that every statement ran; a rollback of the caller's transaction calls forget_seqs.
            self._seqs[device_id] = [acked, held]
            return fresh, acked

    def forget_seqs(self, device_ids: set[str] | builtins.list[str]) -> None:
        """Drop cached acks (after a rolled-back transaction): they are read from the database again."""
        for device_id in device_ids:
            self._seqs.pop(device_id, None)

    def set_desired_many(self, fingerprints: dict[str, str]) -> dict[str, int]:
        """`set_desired` for many devices in one transaction; {device: revision} for the known ones."""
        revisions: dict[str, int] = {}
        with self.database.transaction() as db:
            current = {
                r["id"]: (r["desired_revision"], r["desired_fingerprint"])
                for chunk in _chunks(list(fingerprints))
                for r in db.query(
                    f"SELECT id, desired_revision, desired_fingerprint FROM devices"
                    f" WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                )
            }
            changed = []
            for device_id, (revision, old) in current.items():
                if old != fingerprints[device_id]:
                    revision += 1
                    changed.append((revision, fingerprints[device_id], device_id))
                revisions[device_id] = revision
            db.conn.executemany(
                "UPDATE devices SET desired_revision = ?, desired_fingerprint = ? WHERE id = ?", changed
            )
        return revisions

    def set_desired(self, device_id: str, fingerprint: str) -> int:
        """Bump the device's desired revision if its set of (service, generation) changed; return the revision."""
        with self.database.transaction() as db:
            rows = list(db.query("SELECT desired_revision, desired_fingerprint FROM devices WHERE id = ?", [device_id]))
            if not rows:
                return 0
            revision, old = rows[0]["desired_revision"], rows[0]["desired_fingerprint"]
            if old != fingerprint:
                revision += 1
                db.execute(
                    "UPDATE devices SET desired_revision = ?, desired_fingerprint = ? WHERE id = ?",
                    [revision, fingerprint, device_id],
                )
            return revision
