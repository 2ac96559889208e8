"""Telemetry tables: points from agents (already deduplicated by (device, seq)) and profile results."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from hub.store.db import Database, schema


@schema
def _create(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS telemetry_points (
            device TEXT NOT NULL,
            service TEXT NOT NULL DEFAULT '',
            metric TEXT NOT NULL,
            value REAL NOT NULL,
            at_ms INTEGER NOT NULL,
            labels TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX IF NOT EXISTS telemetry_by_device ON telemetry_points (device, metric, at_ms);
        CREATE INDEX IF NOT EXISTS telemetry_by_time ON telemetry_points (at_ms);
        CREATE TABLE IF NOT EXISTS profile_results (
            device TEXT NOT NULL,
            request_id TEXT NOT NULL,
            service TEXT NOT NULL,
            result TEXT NOT NULL,                -- JSON of ProfileResult
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (device, request_id)
        );
        """
    )


class TelemetryStore:
    """SQL for telemetry; `TelemetryService` holds retention and queries."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def insert(self, rows: list[tuple[str, str, str, float, int, str]]) -> None:
        """Append points, each (device, service, metric, value, at_ms, labels JSON), in one transaction."""
        if not rows:
            return
        with self.database.transaction() as db:
            # One prepared statement for the lot: telemetry is the hub's highest-volume write.
            db.conn.executemany(
                "INSERT INTO telemetry_points (device, service, metric, value, at_ms, labels)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def delete_before(self, at_ms: int) -> int:
        """Drop points older than `at_ms`; return how many."""
        with self.database.transaction() as db:
            cur = db.execute("DELETE FROM telemetry_points WHERE at_ms < ?", [at_ms])
            db.execute("DELETE FROM profile_results WHERE at_ms < ?", [at_ms])
            return cur.rowcount

    def query(
        self, *, device: str | None, service: str | None, metric: str | None, since_ms: int, limit: int
    ) -> list[dict[str, Any]]:
        """Points matching the filters, newest first."""
        where: list[str] = ["at_ms >= ?"]
        args: list[str | int] = [since_ms]
        for col, value in (("device", device), ("service", service), ("metric", metric)):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = f"SELECT * FROM telemetry_points WHERE {' AND '.join(where)} ORDER BY at_ms DESC LIMIT ?"
        with self.database.read() as db:
            rows = list(db.query(sql, [*args, limit]))
        for r in rows:
            r["labels"] = json.loads(r["labels"])
        return rows

    def latest(self, device: str) -> list[dict[str, Any]]:
        """The newest point of each (service, metric) of one device."""
        sql = (
            "SELECT service, metric, value, MAX(at_ms) AS at_ms FROM telemetry_points"
            " WHERE device = ? GROUP BY service, metric ORDER BY service, metric"
        )
        with self.database.read() as db:
            return list(db.query(sql, [device]))

    def put_profile(self, device: str, request_id: str, service: str, result: dict[str, Any], at_ms: int) -> None:
        """Store one profile result (a repeat replaces it)."""
        with self.database.read() as db:
            db.table("profile_results").upsert(
                {"device": device, "request_id": request_id, "service": service, "result": json.dumps(result),
                 "at_ms": at_ms},
                pk=("device", "request_id"),
            )
