"""The hub's only SQL: one SQLite database (sqlite-utils, WAL mode) in the data dir.

Each room keeps its tables in its own module here (`registry`, `fleet`, ...) and
registers its schema with `Database.schema`; services above talk to these
modules, never to SQL.
"""

# importing a room's store module registers its schema (registry; control plane: fleet, deployments, telemetry)
from hub.store import deployments, fleet, registry, telemetry  # noqa: F401
from hub.store.db import Database, DataDirLocked

__all__ = ["DataDirLocked", "Database"]
