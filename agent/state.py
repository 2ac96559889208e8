"""The agent's durable state: one SQLite file in the data dir.

Holds the identity, the last applied DesiredState, what runs per service (current and
last-good generation with their manifests, ports, PIDs) and the outbox table (see
agent/outbox.py). Plain `sqlite3` rather than sqlite-utils on purpose: sqlite-utils
imports numpy when it is installed, which alone would cost ~16 MiB of the agent's
50 MiB idle budget.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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


WAL_PAGES = 32  # checkpoint (and start the WAL over) past this many pages


@dataclass
class Identity:
    """Who this agent is to the hub, as issued at enrollment."""

    device_id: str
    hub: str  # HOST:PORT of the hub API (enrollment, OCI pulls)
    grpc_address: str
    credential: str  # hex sha256 of the certificate DER: the --insecure / MQTT credential
    mqtt: dict[str, str] = field(default_factory=dict)
    # The hub's manifest-signing key as enrollment checked it (agent.trust.SigningKey JSON); '' from a hub
    # that gave none: then the first signed desired state's certificate, checked against the CA, sets it.
    signing_key: str = ""
    # Bearer token for pulls from the hub's OCI endpoint, issued at enrollment; '' from a hub that gave none.
    pull_token: str = ""


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
    phase: agent_pb2.Phase = agent_pb2.PHASE_UNSPECIFIED
    message: str = ""
    restarts: int = 0


def _manifest(blob: bytes | None) -> agent_pb2.ServiceManifest | None:
    return agent_pb2.ServiceManifest.FromString(blob) if blob else None


class AgentState:
    """The agent's SQLite database (`DATA_DIR/agent.db`, WAL). Thread-safe: one connection, one lock.

    The key/value rows, the desired state and the service rows are also kept in memory (write-through):
    this object is the only writer of its file (one agent per data dir, flock), and the reconciler and
    the outbox read them on every pass and every message, so reads need not go to SQLite.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.data_dir / "agent.db", check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        # The database is a few pages; SQLite's default lets its WAL grow to 1,000 pages (4 MiB) before a
        # checkpoint starts it over. A short WAL is rewritten in place instead of always growing into new
        # pages, and bounds the agent's disk (a fleet of agents on one tmpfs: its memory).
        self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self.conn.execute(f"PRAGMA journal_size_limit={4 * WAL_PAGES * 4096}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(_SCHEMA)
        self.lock = threading.RLock()
        self._kv: dict[str, str] = dict(self.conn.execute("SELECT key, value FROM kv").fetchall())
        self._desired: agent_pb2.DesiredState | None = None  # parsed on first use
        self._services: dict[str, ServiceRecord] | None = None
        self._depth = 0  # nesting of transaction()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction for several changes (fewer commits); nests: only the outermost commits.

        The in-memory copies are dropped on a rollback, so they never show a change that was not stored.
        """
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._reload()
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _reload(self) -> None:
        self._kv = dict(self.conn.execute("SELECT key, value FROM kv").fetchall())
        self._desired, self._services = None, None

    def close(self) -> None:
        """Close the database."""
        with self.lock:
            self.conn.close()

    # ---- key/value ----

    def get(self, key: str, default: str | None = None) -> str | None:
        """A stored value, or `default`."""
        return self._kv.get(key, default)

    def put(self, key: str, value: str) -> None:
        """Store a value (replaces); a value equal to the stored one is not written again."""
        with self.lock:
            if self._kv.get(key) == value:
                return
            self.conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
            self._kv[key] = value

    def keys(self, prefix: str) -> list[tuple[str, str]]:
        """(key, value) of every stored key starting with `prefix`."""
        with self.lock:
            return [(k, v) for k, v in self._kv.items() if k.startswith(prefix)]

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
        """The last DesiredState applied (empty, revision 0, before the first). Callers must not modify it."""
        with self.lock:
            if self._desired is None:
                raw = self._kv.get("desired")
                desired = agent_pb2.DesiredState.FromString(bytes.fromhex(raw)) if raw else agent_pb2.DesiredState()
                self._desired = desired
            return self._desired

    def save_desired(self, desired: agent_pb2.DesiredState) -> bool:
        """Store `desired` unless it is older than the one applied; True when stored (revisions only grow)."""
        with self.lock:
            if desired.revision < self.desired().revision:
                return False
            self.put("desired", desired.SerializeToString().hex())
            stored = agent_pb2.DesiredState()
            stored.CopyFrom(desired)  # the caller keeps its message; ours must not change under us
            self._desired = stored
            return True

    # ---- services ----

    def services(self) -> dict[str, ServiceRecord]:
        """Every service with a row, by name (copies: change one, then save_service it)."""
        with self.lock:
            return {name: copy.copy(rec) for name, rec in self._rows().items()}

    def service_rows(self) -> Mapping[str, ServiceRecord]:
        """Every service's row, by name, without copies: for reading only (a reconcile pass reads them every
        tick for every agent, and copying each record was most of an idle agent's pass)."""
        with self.lock:
            return MappingProxyType(self._rows())

    def _rows(self) -> dict[str, ServiceRecord]:
        if self._services is None:
            self._services = self._load_services()
        return self._services

    def _load_services(self) -> dict[str, ServiceRecord]:
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
        """One service's row (a copy), or None."""
        with self.lock:
            rec = self._rows().get(name)
            return copy.copy(rec) if rec is not None else None

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
            if self._services is not None:
                self._services[rec.name] = copy.copy(rec)

    def delete_service(self, name: str) -> None:
        """Forget a service (after it was stopped and cleaned up)."""
        with self.lock:
            self.conn.execute("DELETE FROM services WHERE name = ?", (name,))
            if self._services is not None:
                self._services.pop(name, None)
