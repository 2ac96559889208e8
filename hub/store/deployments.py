"""Deployment tables: services (desired state), their generations' manifests, per-device statuses, and the
TLS certificates issued for services' runtimes on devices."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from hub.store.db import Database


def create_tables(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS services (
            name TEXT PRIMARY KEY,
            generation INTEGER NOT NULL,         -- only grows, also across delete + re-create
            state TEXT NOT NULL,                 -- active | deleted
            target TEXT NOT NULL,
            spec TEXT NOT NULL,                  -- JSON of the request that made the current generation
            keys TEXT NOT NULL DEFAULT '{}',     -- JSON {"primary", "secondary", "token_secret"}
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS service_generations (
            service TEXT NOT NULL,
            generation INTEGER NOT NULL,
            manifest BLOB NOT NULL,              -- serialized edgeport.v1.ServiceManifest
            models TEXT NOT NULL,                -- JSON [[name, version], ...] for in-use checks
            created_at REAL NOT NULL,
            PRIMARY KEY (service, generation)
        );
        CREATE TABLE IF NOT EXISTS service_status (
            service TEXT NOT NULL,
            device TEXT NOT NULL,
            generation INTEGER NOT NULL,
            phase INTEGER NOT NULL,
            message TEXT NOT NULL DEFAULT '',
            scoring_uri TEXT NOT NULL DEFAULT '',
            swagger_uri TEXT NOT NULL DEFAULT '',
            serving_generation INTEGER NOT NULL DEFAULT 0,
            log_tail TEXT NOT NULL DEFAULT '[]',
            restarts INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL,
            PRIMARY KEY (service, device)
        );
        CREATE TABLE IF NOT EXISTS service_certificates (
            service TEXT NOT NULL,
            device TEXT NOT NULL,
            source TEXT NOT NULL,                -- what it answers: "hub:<cname>" or "user:<sha256 of the cert>"
            csr_sha256 TEXT NOT NULL,            -- what the request asked: sha256 of its key and names
            certificate_pem BLOB NOT NULL,
            sealed_key BLOB NOT NULL DEFAULT x'', -- the user's key sealed to the request's key ('' when hub-issued)
            sha256 TEXT NOT NULL,                -- of certificate + sealed key: part of the device's desired revision
            issued_at REAL NOT NULL,
            PRIMARY KEY (service, device)
        );
        """
    )


def _service(row: dict[str, Any]) -> dict[str, Any]:
    row["spec"] = json.loads(row["spec"])
    row["keys"] = json.loads(row["keys"])
    return row


class DeploymentStore:
    """SQL for services; `DeploymentService` holds the rules."""

    def __init__(self, database: Database) -> None:
        self.database = database
        # Read for every device on every desired-state sync: cached, and dropped on each services write.
        self._targets: list[tuple[str, int, str]] | None = None
        self._version = 0  # bumped after each committed services write
        self._manifests: dict[tuple[str, int], bytes] = {}  # generations are immutable once written

    def targets(self) -> list[tuple[str, int, str]]:
        """(name, generation, target) of every active service, by name."""
        targets = self._targets
        if targets is None:
            version = self._version
            with self.database.snapshot() as db:
                rows = db.query("SELECT name, generation, target FROM services WHERE state = 'active' ORDER BY name")
                targets = [(r["name"], r["generation"], r["target"]) for r in rows]
            if version == self._version:  # no write committed meanwhile: the rows are current
                self._targets = targets
        return targets

    def _services_changed(self) -> None:
        # Called after the commit: a snapshot read before it must not be cached (see targets()).
        self._version += 1
        self._targets = None

    def state(self, name: str) -> str | None:
        """'active' or 'deleted' (None if never created), without decoding the spec."""
        for service, _, _ in self.targets():
            if service == name:
                return "active"
        with self.database.snapshot() as db:
            rows = list(db.query("SELECT state FROM services WHERE name = ?", [name]))
        return rows[0]["state"] if rows else None

    def get(self, name: str) -> dict[str, Any] | None:
        """One service row (spec and keys decoded), deleted ones included; None if never created."""
        with self.database.read() as db:
            rows = list(db.query("SELECT * FROM services WHERE name = ?", [name]))
            return _service(rows[0]) if rows else None

    def active(self) -> list[dict[str, Any]]:
        """Every active service, by name."""
        with self.database.read() as db:
            return [_service(r) for r in db.query("SELECT * FROM services WHERE state = 'active' ORDER BY name")]

    def put_generation(
        self,
        name: str,
        generation: int,
        target: str,
        spec: dict[str, Any],
        keys: dict[str, str],
        manifest: bytes,
        models: list[tuple[str, int]],
        expect_generation: int,
    ) -> bool:
        """Write generation `generation` as current; False if someone else moved the service meanwhile."""
        now = time.time()
        with self.database.transaction() as db:
            rows = list(db.query("SELECT generation FROM services WHERE name = ?", [name]))
            current = rows[0]["generation"] if rows else 0
            if current != expect_generation:
                return False
            values = {"generation": generation, "state": "active", "target": target, "spec": json.dumps(spec),
                      "keys": json.dumps(keys), "updated_at": now}
            if rows:
                sets = ", ".join(f"{k} = ?" for k in values)
                db.execute(f"UPDATE services SET {sets} WHERE name = ?", [*values.values(), name])
            else:
                db.table("services").insert({"name": name, "created_at": now, **values})
            db.table("service_generations").insert(
                {"service": name, "generation": generation, "manifest": manifest, "models": json.dumps(models),
                 "created_at": now}
            )
        self._services_changed()
        return True

    def manifest(self, name: str, generation: int) -> bytes | None:
        """Serialized manifest of one generation."""
        cached = self._manifests.get((name, generation))
        if cached is not None:
            return cached
        with self.database.snapshot() as db:
            rows = list(
                db.query("SELECT manifest FROM service_generations WHERE service = ? AND generation = ?",
                         [name, generation])
            )
        if not rows:
            return None
        if len(self._manifests) > 1024:  # bounded: old generations stop being asked for
            self._manifests.clear()
        self._manifests[(name, generation)] = rows[0]["manifest"]
        return rows[0]["manifest"]

    def mark_deleted(self, name: str) -> None:
        """Take the service out of desired state (its generation counter stays)."""
        with self.database.transaction() as db:
            db.execute("UPDATE services SET state = 'deleted', updated_at = ? WHERE name = ?", [time.time(), name])
        self._services_changed()

    def set_keys(self, name: str, keys: dict[str, str]) -> None:
        """Replace a service's auth keys."""
        with self.database.read() as db:
            db.execute("UPDATE services SET keys = ? WHERE name = ?", [json.dumps(keys), name])

    def statuses(self, name: str) -> dict[str, dict[str, Any]]:
        """Per-device status rows of one service."""
        with self.database.read() as db:
            rows = db.query("SELECT * FROM service_status WHERE service = ?", [name])
            out = {}
            for r in rows:
                r["log_tail"] = json.loads(r["log_tail"])
                out[r["device"]] = r
            return out

    def status(self, name: str, device: str) -> dict[str, Any] | None:
        """One device's status row for one service, or None."""
        with self.database.snapshot() as db:
            rows = list(db.query("SELECT * FROM service_status WHERE service = ? AND device = ?", [name, device]))
        if not rows:
            return None
        rows[0]["log_tail"] = json.loads(rows[0]["log_tail"])
        return rows[0]

    def device_statuses(self, device: str) -> list[dict[str, Any]]:
        """Status rows of every service on one device."""
        with self.database.read() as db:
            return list(db.query("SELECT * FROM service_status WHERE device = ? ORDER BY service", [device]))

    def put_status(self, row: dict[str, Any]) -> bool:
        """Store a status unless one for a newer generation is already stored; True if written.

        Columns left out of `row` keep their stored value (or their default on a first insert).
        """
        if "log_tail" in row:
            row = {**row, "log_tail": json.dumps(row["log_tail"])}
        cols = list(row)
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("service", "device"))
        sql = (
            f"INSERT INTO service_status ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
            f" ON CONFLICT (service, device) DO UPDATE SET {sets}"
            " WHERE excluded.generation >= service_status.generation"
        )
        with self.database.read() as db:  # one statement: atomic on its own
            return db.conn.execute(sql, list(row.values())).rowcount == 1

    def drop_statuses(self, name: str, devices: list[str] | None = None) -> None:
        """Forget statuses of a service (all devices, or the given ones)."""
        with self.database.read() as db:
            if devices is None:
                db.execute("DELETE FROM service_status WHERE service = ?", [name])
            else:
                for d in devices:
                    db.execute("DELETE FROM service_status WHERE service = ? AND device = ?", [name, d])

    def put_certificate(self, row: dict[str, Any]) -> None:
        """Store (replace) the TLS certificate of a service's runtime on a device."""
        with self.database.read() as db:  # one statement: atomic on its own
            db.table("service_certificates").insert(row, replace=True)

    def certificate(self, name: str, device: str) -> dict[str, Any] | None:
        """The TLS certificate row of `name` on `device`, or None."""
        with self.database.snapshot() as db:
            rows = list(db.query("SELECT * FROM service_certificates WHERE service = ? AND device = ?", [name, device]))
        return rows[0] if rows else None

    def certificates(self, devices: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """device -> service -> certificate row, for the given devices (all when None), in one read."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        wanted = None if devices is None else set(devices)
        with self.database.snapshot() as db:
            for r in db.query("SELECT * FROM service_certificates"):
                if wanted is None or r["device"] in wanted:
                    out.setdefault(r["device"], {})[r["service"]] = r
        return out

    def drop_certificates(self, name: str) -> None:
        """Forget the certificates of a deleted service."""
        with self.database.read() as db:
            db.execute("DELETE FROM service_certificates WHERE service = ?", [name])

    def generations_using(self, model: str, version: int) -> list[tuple[str, int]]:
        """(service, generation) pairs whose manifest uses model:version."""
        with self.database.read() as db:
            out = []
            for r in db.query("SELECT service, generation, models FROM service_generations"):
                if [model, version] in json.loads(r["models"]):
                    out.append((r["service"], r["generation"]))
            return out
