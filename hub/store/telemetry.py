"""Telemetry tables: points from agents (already deduplicated by (device, seq)) and profile results."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from hub.store.db import Database


def create_tables(db: sqlite_utils.Database) -> None:
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

    def bucket_extremes(
        self,
        *,
        devices: list[str],
        service: str | None,
        metric: str,
        since_ms: int,
        until_ms: int,
        bucket_ms: int,
        last: bool = False,
    ) -> list[dict[str, Any]]:
        """Per (device, service, bucket) of `metric` in [since_ms, until_ms): min, sum, max and count; or, with
        `last`, the newest point's value and time (`last`, `last_at`), which is what a counter's rate needs.

        A bucket is `at_ms // bucket_ms * bucket_ms` (its start). One read; the (device, metric, at_ms)
        index finds each device's points, so a chart of one device does not scan the fleet's.
        """
        if not devices:
            return []
        marks = ",".join("?" * len(devices))
        where = f"device IN ({marks}) AND metric = ? AND at_ms >= ? AND at_ms < ?"
        args: list[str | int] = [*devices, metric, since_ms, until_ms]
        if service is not None:
            where += " AND service = ?"
            args.append(service)
        if last:
            # The one MAX(at_ms) makes the bare `value` that of the bucket's newest point (SQLite's bare-column
            # rule): what a counter stood at when the bucket ended.
            figures = "value AS last, MAX(at_ms) AS last_at"
        else:
            figures = "MIN(value) AS min, SUM(value) AS sum, MAX(value) AS max, COUNT(*) AS count"
        sql = (
            f"SELECT device, service, (at_ms / ?) * ? AS bucket, {figures} FROM telemetry_points WHERE {where}"
            " GROUP BY device, service, bucket ORDER BY device, service, bucket"
        )
        with self.database.snapshot() as db:  # the last commit; never waits for the ingest writer
            return list(db.query(sql, [bucket_ms, bucket_ms, *args]))

    def metric_names(self, devices: list[str], since_ms: int) -> list[str]:
        """Distinct metric names the devices sent since `since_ms`."""
        if not devices:
            return []
        marks = ",".join("?" * len(devices))
        sql = f"SELECT DISTINCT metric FROM telemetry_points WHERE device IN ({marks}) AND at_ms >= ? ORDER BY metric"
        with self.database.snapshot() as db:  # the last commit; never waits for the ingest writer
            return [r["metric"] for r in db.query(sql, [*devices, since_ms])]

    def recent_profiles(self, limit: int) -> list[dict[str, Any]]:
        """The newest profile results, newest first: (device, service, result as stored, at_ms)."""
        with self.database.snapshot() as db:
            rows = list(db.query(
                "SELECT device, service, result, at_ms FROM profile_results ORDER BY at_ms DESC LIMIT ?", [limit]
            ))
        for r in rows:
            r["result"] = json.loads(r["result"])
        return rows
