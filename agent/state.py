"""The agent's durable state: one SQLite file in the data dir.

Holds the identity, the last applied DesiredState, what runs per service (current and
last-good generation with their manifests, ports, PIDs) and the outbox table (see
agent/outbox.py). Plain `sqlite3` rather than sqlite-utils on purpose: sqlite-utils
imports numpy when it is installed, which alone would cost ~16 MiB of the agent's
50 MiB idle budget.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from protos.edgeport.v1 import agent_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,        -- generation running now (0: none)
    manifest BLOB,                                -- its ServiceManifest
    last_good_generation INTEGER NOT NULL DEFAULT 0,
    last_good_manifest BLOB,
    failed_generation INTEGER NOT NULL DEFAULT 0, -- newest generation that failed: not retried
    port INTEGER NOT NULL DEFAULT 0,
    grpc_port INTEGER NOT NULL DEFAULT 0,
    pid INTEGER NOT NULL DEFAULT 0,
    pid_start INTEGER NOT NULL DEFAULT 0,         -- /proc/<pid>/stat starttime: tells a reused PID apart
    phase INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL
);
"""


@dataclass
class Identity:
    """Who this agent is to the hub, as issued at enrollment."""

    device_id: str
    hub: str  # HOST:PORT of the hub API (enrollment, OCI pulls)
    grpc_address: str
    credential: str  # hex sha256 of the certificate DER: the --insecure / MQTT credential
    mqtt: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceRecord:
    """What the agent knows about one service's processes (one row of `services`)."""

    name: str
    generation: int = 0
    manifest: agent_pb2.ServiceManifest | None = None
    last_good_generation: int = 0
    last_good_manifest: agent_pb2.ServiceManifest | None = None
    failed_generation: int = 0
    port: int = 0
    grpc_port: int = 0
    pid: int = 0
    pid_start: int = 0
    phase: int = agent_pb2.PHASE_UNSPECIFIED
    message: str = ""
    restarts: int = 0


def _manifest(blob: bytes | None) -> agent_pb2.ServiceManifest | None:
    return agent_pb2.ServiceManifest.FromString(blob) if blob else None


class AgentState:
    """The agent's SQLite database (`DATA_DIR/agent.db`, WAL). Thread-safe: one connection, one lock."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.data_dir / "agent.db", check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(_SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        """Close the database."""
        with self.lock:
            self.conn.close()

    # ---- key/value ----

    def get(self, key: str, default: str | None = None) -> str | None:
        """A stored value, or `default`."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: str) -> None:
        """Store a value (replaces)."""
        with self.lock:
            self.conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    # ---- identity ----

    def identity(self) -> Identity | None:
        """The enrolled identity, or None before enrollment."""
        raw = self.get("identity")
        return Identity(**json.loads(raw)) if raw else None

    def save_identity(self, identity: Identity) -> None:
        """Store the identity issued at enrollment."""
        self.put("identity", json.dumps(identity.__dict__))

    # ---- desired state ----

    def desired(self) -> agent_pb2.DesiredState:
        """The last DesiredState applied (empty, revision 0, before the first)."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM kv WHERE key = 'desired'").fetchone()
        return agent_pb2.DesiredState.FromString(bytes.fromhex(row[0])) if row else agent_pb2.DesiredState()

    def save_desired(self, desired: agent_pb2.DesiredState) -> bool:
        """Store `desired` unless it is older than the one applied; True when stored (revisions only grow)."""
        with self.lock:
            if desired.revision < self.desired().revision:
                return False
            self.put("desired", desired.SerializeToString().hex())
            return True

    # ---- services ----

    def services(self) -> dict[str, ServiceRecord]:
        """Every service with a row, by name."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT name, generation, manifest, last_good_generation, last_good_manifest, failed_generation,"
                " port, grpc_port, pid, pid_start, phase, message, restarts FROM services"
            ).fetchall()
        out = {}
        for r in rows:
            out[r[0]] = ServiceRecord(
                name=r[0], generation=r[1], manifest=_manifest(r[2]), last_good_generation=r[3],
                last_good_manifest=_manifest(r[4]), failed_generation=r[5], port=r[6], grpc_port=r[7],
                pid=r[8], pid_start=r[9], phase=r[10], message=r[11], restarts=r[12],
            )  # fmt: skip
        return out

    def service(self, name: str) -> ServiceRecord | None:
        """One service's row, or None."""
        return self.services().get(name)

    def save_service(self, rec: ServiceRecord) -> None:
        """Insert or replace one service's row."""
        with self.lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO services (name, generation, manifest, last_good_generation, last_good_manifest,"
                " failed_generation, port, grpc_port, pid, pid_start, phase, message, restarts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.name, rec.generation, rec.manifest.SerializeToString() if rec.manifest else None,
                    rec.last_good_generation,
                    rec.last_good_manifest.SerializeToString() if rec.last_good_manifest else None,
                    rec.failed_generation, rec.port, rec.grpc_port, rec.pid, rec.pid_start, rec.phase, rec.message,
                    rec.restarts,
                ),
            )  # fmt: skip

    def delete_service(self, name: str) -> None:
        """Forget a service (after it was stopped and cleaned up)."""
        with self.lock:
            self.conn.execute("DELETE FROM services WHERE name = ?", (name,))
