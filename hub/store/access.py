"""Access tables: API tokens (by hash only) and the audit log.

The tables are created when an `AccessStore` is constructed, not registered at import time, so the
schema exists exactly where the store is used.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from hub.errors import Conflict
from hub.store.db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_by_who ON audit_log (who, at);
"""

_TOKEN_COLUMNS = "name, role, created_at, expires_at, revoked_at"


class AccessStore:
    """SQL for tokens and audit records; `hub.access.AccessService` holds the rules."""

    def __init__(self, database: Database) -> None:
        self.database = database
        with database.transaction() as db:
            db.executescript(_SCHEMA)

    # ---- tokens ----

    def insert_token(self, name: str, role: str, token_sha256: str, created_at: float, expires_at: float) -> None:
        """Store a new token; Conflict when the name was ever used (revoked names stay taken for the audit)."""
        try:
            with self.database.transaction() as db:
                db.execute(
                    "INSERT INTO api_tokens (name, role, token_sha256, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    [name, role, token_sha256, created_at, expires_at],
                )
        except sqlite3.IntegrityError:
            raise Conflict(
                f"a token named {name!r} exists (revoked and expired ones keep their names); choose another name"
            ) from None

    def token_by_hash(self, token_sha256: str) -> dict[str, Any] | None:
        """The token row with this hash, or None (reads the last commit, never waits for a writer)."""
        with self.database.snapshot() as db:
            row = db.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_sha256 = ?", [token_sha256]
            ).fetchone()
        return None if row is None else dict(zip(_TOKEN_COLUMNS.split(", "), row, strict=True))

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every token (never a hash), oldest first."""
        with self.database.snapshot() as db:
            rows = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, name").fetchall()
        return [dict(zip(_TOKEN_COLUMNS.split(", "), row, strict=True)) for row in rows]

    def revoke_token(self, name: str, at: float) -> str | None:
        """Mark a token revoked; its hash (to drop from caches), or None when there is no such token.

        Revoking a revoked token again keeps the first time.
        """
        with self.database.transaction() as db:
            row = db.execute("SELECT token_sha256 FROM api_tokens WHERE name = ?", [name]).fetchone()
            if row is None:
                return None
            db.execute("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE name = ?", [at, name])
        return str(row[0])

    def count_active(self, role: str, now: float) -> int:
        """How many unrevoked, unexpired tokens have `role`."""
        with self.database.snapshot() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM api_tokens WHERE role = ? AND revoked_at IS NULL AND expires_at > ?", [role, now]
            ).fetchone()
        return int(row[0])

    # ---- audit ----

    def insert_audit(self, rows: list[tuple[float, str, str, str, int, str]]) -> None:
        """Append records, each (at, who, source, action, status, result), in one transaction."""
        if not rows:
            return
        with self.database.transaction() as db:
            db.conn.executemany(
                "INSERT INTO audit_log (at, who, source, action, status, result) VALUES (?, ?, ?, ?, ?, ?)", rows
            )

    def query_audit(self, since: float | None, who: str | None, limit: int) -> list[dict[str, Any]]:
        """Records newest first, filtered by time and token name."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if who is not None:
            where.append("who = ?")
            params.append(who)
        sql = "SELECT at, who, source, action, status, result FROM audit_log"
        sql += (" WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY id DESC LIMIT ?"
        with self.database.snapshot() as db:
            rows = db.execute(sql, [*params, limit]).fetchall()
        keys = ("at", "who", "source", "action", "status", "result")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def trim_audit(self, before: float, keep_rows: int) -> int:
        """Drop records older than `before` and all but the newest `keep_rows`; how many went."""
        with self.database.transaction() as db:
            gone = db.execute("DELETE FROM audit_log WHERE at < ?", [before]).rowcount
            gone += db.execute(
                "DELETE FROM audit_log WHERE id <= (SELECT MAX(id) FROM audit_log) - ?", [keep_rows]
            ).rowcount
        return int(gone)
