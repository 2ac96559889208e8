"""The hub's only SQL: one SQLite database (sqlite-utils, WAL mode) in the data dir.

Each room keeps its tables in its own module here (`registry`, `fleet`, ...) and
registers its schema with `Database.schema`; services above talk to these
modules, never to SQL.
"""

from hub.store import registry  # noqa: F401  (registers the registry schema)
from hub.store.db import Database, DataDirLocked

__all__ = ["DataDirLocked", "Database"]
