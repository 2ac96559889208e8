"""The hub's only SQL: one SQLite database (sqlite-utils, WAL mode) in the data dir.

Each service keeps its tables in its own module here (`registry`, `fleet`, ...), which creates them
(`create_tables`, idempotent); `open_database` opens the database with all of them. Services above
talk to these modules, never to SQL.
"""

from __future__ import annotations

from pathlib import Path

from hub.store import deployments, fleet, registry, telemetry
from hub.store.db import Database, DataDirLocked, SchemaFn

# Every table module's schema, created in this order when the hub opens its database.
SCHEMAS: tuple[SchemaFn, ...] = (
    registry.create_tables,
    fleet.create_tables,
    deployments.create_tables,
    telemetry.create_tables,
)


def open_database(data_dir: Path) -> Database:
    """Open (and lock) the hub database in `data_dir` with every table module's schema."""
    return Database(data_dir, SCHEMAS)


__all__ = ["SCHEMAS", "DataDirLocked", "Database", "open_database"]
