"""The model registry's tables and all of its SQL.

models            one row per name; `last_version` makes versions count up and never reuse a number
model_versions    one row per (name, version): description, framework, time, its OCI manifest
model_files       the files of a version: relative path, blob digest, size
model_labels      tags and properties of a version (kind = 'tag' | 'property')
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

Row = dict[str, Any]

MAX_VERSION = 2**63 - 1  # SQLite's INTEGER; a larger number cannot name a stored version


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the registry tables and indexes if they do not exist."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS models (
            name TEXT PRIMARY KEY,
            last_version INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS model_versions (
            name TEXT NOT NULL REFERENCES models(name),
            version INTEGER NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            framework TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            manifest_digest TEXT NOT NULL,
            manifest TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        CREATE INDEX IF NOT EXISTS model_versions_manifest ON model_versions(manifest_digest);
        CREATE TABLE IF NOT EXISTS model_files (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (name, version, path),
            FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE
        );
        CREATE INDEX IF NOT EXISTS model_files_digest ON model_files(digest);
        CREATE TABLE IF NOT EXISTS model_labels (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('tag', 'property')),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (name, version, kind, key),
            FOREIGN KEY (name, version) REFERENCES model_versions(name, version) ON DELETE CASCADE
        );
        CREATE INDEX IF NOT EXISTS model_labels_tag ON model_labels(kind, key, value);
        """
    )


def allocate_version(db: sqlite_utils.Database, name: str, now: str) -> int:
    """The next version number of `name` (creating the model row); call inside a transaction."""
    row = db.execute("SELECT last_version FROM models WHERE name = ?", [name]).fetchone()
    if row is None:
        db.execute("INSERT INTO models (name, last_version, created_at) VALUES (?, 1, ?)", [name, now])
        return 1
    version = row[0] + 1
    db.execute("UPDATE models SET last_version = ? WHERE name = ?", [version, name])
    return version


def insert_version(
    db: sqlite_utils.Database,
    version: Row,
    files: list[tuple[str, str, int]],
    tags: dict[str, str],
    properties: dict[str, str],
) -> None:
    """Insert one version with its files and labels; call inside a transaction."""
    name, number = version["name"], version["version"]
    db.execute(
        "INSERT INTO model_versions (name, version, description, framework, created_at, manifest_digest, manifest)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            name,
            number,
            version["description"],
            version["framework"],
            version["created_at"],
            version["manifest_digest"],
            version["manifest"],
        ],
    )
    db.conn.executemany(
        "INSERT INTO model_files (name, version, path, digest, size) VALUES (?, ?, ?, ?, ?)",
        [(name, number, path, digest, size) for path, digest, size in files],
    )
    labels = [(name, number, "tag", k, v) for k, v in tags.items()]
    labels += [(name, number, "property", k, v) for k, v in properties.items()]
    db.conn.executemany("INSERT INTO model_labels (name, version, kind, key, value) VALUES (?, ?, ?, ?, ?)", labels)


def model_exists(db: sqlite_utils.Database, name: str) -> bool:
    """True when `name` was ever registered (its repository is known, even with no versions left)."""
    return db.execute("SELECT 1 FROM models WHERE name = ?", [name]).fetchone() is not None


def latest_version(db: sqlite_utils.Database, name: str) -> int | None:
    """The highest existing version of `name`, or None."""
    row = db.execute("SELECT MAX(version) FROM model_versions WHERE name = ?", [name]).fetchone()
    return row[0] if row and row[0] is not None else None


def get_version(db: sqlite_utils.Database, name: str, version: int) -> Row | None:
    """One version row (with `files`, `tags`, `properties`), or None."""
    rows = _version_rows(db, "WHERE v.name = ? AND v.version = ?", [name, version])
    return rows[0] if rows else None


def version_by_manifest(db: sqlite_utils.Database, name: str, manifest_digest: str) -> Row | None:
    """The version of `name` whose manifest has this digest, or None."""
    rows = _version_rows(db, "WHERE v.name = ? AND v.manifest_digest = ?", [name, manifest_digest])
    return rows[0] if rows else None


def list_versions(
    db: sqlite_utils.Database, name: str | None = None, tags: dict[str, str | None] | None = None
) -> list[Row]:
    """Versions (newest first per name), optionally of one name and carrying every given tag.

    A tag filter value of None matches any value of that key.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if name is not None:
        clauses.append("v.name = ?")
        params.append(name)
    for key, value in (tags or {}).items():
        sub = "SELECT 1 FROM model_labels l WHERE l.name = v.name AND l.version = v.version AND l.kind = 'tag'"
        sub += " AND l.key = ?"
        params.append(key)
        if value is not None:
            sub += " AND l.value = ?"
            params.append(value)
        clauses.append(f"EXISTS ({sub})")
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return _version_rows(db, where, params)


def delete_version(db: sqlite_utils.Database, name: str, version: int) -> bool:
    """Delete one version with its files and labels; True when it existed. Call inside a transaction."""
    db.execute("DELETE FROM model_labels WHERE name = ? AND version = ?", [name, version])
    db.execute("DELETE FROM model_files WHERE name = ? AND version = ?", [name, version])
    cur = db.execute("DELETE FROM model_versions WHERE name = ? AND version = ?", [name, version])
    return cur.rowcount > 0


def digest_in_use(db: sqlite_utils.Database, digest: str) -> bool:
    """True when any model version references the blob."""
    return db.execute("SELECT 1 FROM model_files WHERE digest = ? LIMIT 1", [digest]).fetchone() is not None


def _version_rows(db: sqlite_utils.Database, where: str, params: list[Any]) -> list[Row]:
    cur = db.execute(
        "SELECT v.name, v.version, v.description, v.framework, v.created_at, v.manifest_digest, v.manifest"
        f" FROM model_versions v {where} ORDER BY v.name, v.version DESC",
        params,
    )
    cols = [c[0] for c in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    for row in rows:
        key = [row["name"], row["version"]]
        row["files"] = [
            (p, d, s)
            for p, d, s in db.execute(
                "SELECT path, digest, size FROM model_files WHERE name = ? AND version = ? ORDER BY path", key
            ).fetchall()
        ]
        row["tags"], row["properties"] = {}, {}
        for kind, k, v in db.execute(
            "SELECT kind, key, value FROM model_labels WHERE name = ? AND version = ? ORDER BY key", key
        ).fetchall():
            row["tags" if kind == "tag" else "properties"][k] = v
    return rows
