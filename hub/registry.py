"""The model registry's rules: names, labels, versions counting up, all-or-nothing register, in-use checks.

SQL lives in `hub.store.registry`; file content in the `BlobStore`. A version is
registered only when every file's blob is already stored (uploaded first), in one
transaction, together with its OCI manifest, so a failure leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hub.blobs import EMPTY_JSON, EMPTY_JSON_DIGEST, BlobStore, validate_digest
from hub.errors import BadInput, InsufficientStorage, NotFound
from hub.names import LABEL_KEY_RE, NAME_RE, validate_labels, validate_name
from hub.store import Database
from hub.store import registry as store

log = logging.getLogger("hub.registry")

MAX_FILES = 100_000

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
MODEL_ARTIFACT_TYPE = "application/vnd.edgeport.model.v1"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
LAYER_MEDIA_TYPE = "application/octet-stream"
TITLE_ANNOTATION = "org.opencontainers.image.title"
MODEL_REPOSITORY_PREFIX = "models/"

# Called before a version is deleted with (name, version); raise Conflict (naming the user) to refuse.
InUseCheck = Callable[[str, int], None]


@dataclass(frozen=True)
class ModelFile:
    """One file of a model version: path relative to the model folder, blob digest, size in bytes."""

    path: str
    digest: str
    size: int


@dataclass
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    files: list[ModelFile]
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str = ""
    framework: str = ""
    created_at: str = ""
    manifest_digest: str = ""

    @property
    def id(self) -> str:
        """`NAME:VERSION`, the id users and deployments refer to."""
        return f"{self.name}:{self.version}"

    @property
    def repository(self) -> str:
        """The OCI repository holding this model's versions (`models/NAME`)."""
        return MODEL_REPOSITORY_PREFIX + self.name

    @property
    def reference(self) -> str:
        """The OCI tag of this version (its number)."""
        return str(self.version)

    @property
    def size(self) -> int:
        """Total bytes of all files."""
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "framework": self.framework,
            "tags": self.tags,
            "properties": self.properties,
            "created_at": self.created_at,
            "files": [{"path": f.path, "digest": f.digest, "size": f.size} for f in self.files],
            "size": self.size,
            "repository": self.repository,
            "reference": self.reference,
            "manifest_digest": self.manifest_digest,
        }


def validate_file_path(path: object) -> str:
    """A file path inside a model: relative, '/'-separated, no '..', no empty parts."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise BadInput(f"bad file path {path!r}: expected a non-empty relative path")
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise BadInput(f"bad file path {path!r}: must be relative, '/'-separated, without '.' or '..' parts")
    return posixpath.normpath(path)


def validate_version(version: object) -> int:
    """Return `version` if it is a whole number from 1 to 2**63-1 (what SQLite stores), else raise BadInput."""
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= store.MAX_VERSION:
        big = isinstance(version, int) and version.bit_length() > 64  # str() of a huge int is slow or refused
        shown = "(a number of more than 19 digits)" if big else repr(version)[:30]
        raise BadInput(f"bad version {shown}: expected a whole number from 1 to {store.MAX_VERSION}")
    return version


def build_manifest(name: str, version: int, files: list[ModelFile], created_at: str) -> bytes:
    """The OCI image manifest (artifact form) of a model version, as canonical bytes."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": MODEL_ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_JSON_DIGEST, "size": len(EMPTY_JSON)},
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": f.digest,
                "size": f.size,
                "annotations": {TITLE_ANNOTATION: f.path},
            }
            for f in files
        ],
        "annotations": {
            "org.opencontainers.image.created": created_at,
            "org.edgeport.model.name": name,
            "org.edgeport.model.version": str(version),
        },
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


class RegistryService:
    """Register, find and delete model versions."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs
        # hub.services adds checks of other services ("a service uses this version") that refuse a delete.
        self.in_use_checks: list[InUseCheck] = []

    def register(
        self,
        name: str,
        files: list[ModelFile] | list[dict[str, Any]],
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str = "",
        framework: str = "",
    ) -> ModelVersion:
        """Add the next version of `name` with these (already uploaded) files, all or nothing."""
        validate_name(name)
        tags = validate_labels(tags, "tag")
        properties = validate_labels(properties, "property")
        if not isinstance(description, str) or not isinstance(framework, str):
            raise BadInput("description and framework must be strings")
        checked = self._check_files(files)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.db.transaction() as db:
            version = store.allocate_version(db, name, now)
            manifest = build_manifest(name, version, checked, now)
            # The manifest is a blob too, so pulls by digest and GC see it like any other content.
            manifest_digest = self.blobs.put_bytes(manifest)
            store.insert_version(
                db,
                {
                    "name": name,
                    "version": version,
                    "description": description,
                    "framework": framework,
                    "created_at": now,
                    "manifest_digest": manifest_digest,
                    "manifest": manifest.decode(),
                },
                [(f.path, f.digest, f.size) for f in checked],
                tags,
                properties,
            )
        return self.get_version(name, version)

    def _check_files(self, files: list[ModelFile] | list[dict[str, Any]]) -> list[ModelFile]:
        if not isinstance(files, list) or not files:
            raise BadInput("a model version needs at least one file")
        if len(files) > MAX_FILES:
            raise BadInput(f"too many files ({len(files)}); at most {MAX_FILES}")
        checked: list[ModelFile] = []
        seen: set[str] = set()
        for f in files:
            if isinstance(f, dict):
                try:
                    f = ModelFile(path=f["path"], digest=f["digest"], size=f["size"])
                except KeyError as exc:
                    raise BadInput(f"a file entry lacks {exc.args[0]!r} (needs path, digest, size)") from None
            path = validate_file_path(f.path)
            validate_digest(f.digest)
            if not isinstance(f.size, int) or isinstance(f.size, bool) or f.size < 0:
                raise BadInput(f"bad size {f.size!r} for file {path!r}")
            if path in seen:
                raise BadInput(f"file {path!r} is listed twice")
            seen.add(path)
            # A claim, not a mere look: blob collection now spares it until this version holds it.
            if not self.blobs.claim(f.digest):
                raise BadInput(f"file {path!r}: blob {f.digest} has not been uploaded")
            stored = self.blobs.size(f.digest)
            if stored != f.size:
                raise BadInput(f"file {path!r}: announced {f.size} bytes but blob {f.digest} has {stored}")
            checked.append(ModelFile(path, f.digest, f.size))
        # A file cannot also be a folder of another file ("a" and "a/b").
        for path in seen:
            parts = path.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in seen:
                    raise BadInput(f"file {'/'.join(parts[:i])!r} clashes with folder of {path!r}")
        return sorted(checked, key=lambda f: f.path)

    def get_version(self, name: str, version: int | None = None) -> ModelVersion:
        """One version (the latest when `version` is None); NotFound when absent."""
        validate_name(name)
        if version is not None:
            validate_version(version)
        with self.db.read() as db:
            if version is None:
                version = store.latest_version(db, name)
                if version is None:
                    if store.model_exists(db, name):
                        raise NotFound(f"model {name!r} has no versions left (all were deleted)")
                    raise NotFound(f"model {name!r} not found")
            row = store.get_version(db, name, version)
            if row is None:
                if not store.model_exists(db, name):
                    raise NotFound(f"model {name!r} not found")
                raise NotFound(f"model {name!r} has no version {version}")
        return _from_row(row)

    def list_versions(
        self, name: str | None = None, tags: dict[str, str | None] | None = None, latest_only: bool = False
    ) -> list[ModelVersion]:
        """Versions, newest first per name; filter by name and tags (value None = any value)."""
        if name is not None:
            validate_name(name)
        for key in tags or {}:
            if not LABEL_KEY_RE.fullmatch(key):
                raise BadInput(f"bad tag key {key!r}: use 1-255 characters from A-Z a-z 0-9 . _ - /")
        with self.db.read() as db:
            rows = store.list_versions(db, name, tags)
        versions = [_from_row(r) for r in rows]
        if latest_only:
            first: dict[str, ModelVersion] = {}
            for v in versions:  # newest first per name: the first seen of each name is its latest
                first.setdefault(v.name, v)
            versions = list(first.values())
        return versions

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Delete one version unless something uses it (in-use checks raise Conflict).

        Its blobs stay until blob collection finds nothing else references them, at the earliest
        a grace period after this delete. On a full disk the database's space reserve is given
        up so that the delete (which frees space) still goes through.
        """
        existing = self.get_version(name, version)
        for check in self.in_use_checks:
            check(name, version)
        try:
            self._delete_rows(name, version)
        except InsufficientStorage:
            if not self.db.reserve.release():
                raise
            self._delete_rows(name, version)
            # The disk is full: let the next collection take the blobs at once rather than a grace period
            # later (their files are old; the claims of the version's registration would keep them).
            self.blobs.unclaim({f.digest for f in existing.files} | {existing.manifest_digest})
            log.warning("deleted %s:%d on a full disk; its blobs go with the next blob collection"
                        " (POST /api/v1/blobs/gc runs one now)", name, version)
            return existing
        for digest in {f.digest for f in existing.files} | {existing.manifest_digest}:
            self.blobs.claim(digest)  # starts the grace period: a concurrent re-register may still want them
        return existing

    def _delete_rows(self, name: str, version: int) -> None:
        with self.db.transaction() as db:
            store.delete_version(db, name, version)

    # --- OCI view --------------------------------------------------------------------------------
    def knows_repository(self, repository: str) -> bool:
        """True for `models/NAME` when NAME was ever registered."""
        if not repository.startswith(MODEL_REPOSITORY_PREFIX):
            return False
        name = repository[len(MODEL_REPOSITORY_PREFIX) :]
        if not NAME_RE.fullmatch(name):
            return False
        with self.db.read() as db:
            return store.model_exists(db, name)

    def tags(self, repository: str) -> list[str] | None:
        """The tags (version numbers, oldest first) of `models/NAME`; None when not a model repository."""
        if not self.knows_repository(repository):
            return None
        name = repository[len(MODEL_REPOSITORY_PREFIX) :]
        with self.db.read() as db:
            rows = store.list_versions(db, name)
        return [str(r["version"]) for r in reversed(rows)]

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The manifest bytes and digest of `models/NAME` at a tag (version number) or digest; None if unknown."""
        if not self.knows_repository(repository):
            return None
        name = repository[len(MODEL_REPOSITORY_PREFIX) :]
        with self.db.read() as db:
            if reference.startswith("sha256:"):
                row = store.version_by_manifest(db, name, reference)
            elif reference.isascii() and reference.isdigit() and 1 <= int(reference) <= store.MAX_VERSION:
                row = store.get_version(db, name, int(reference))
            elif reference == "latest":
                latest = store.latest_version(db, name)
                row = store.get_version(db, name, latest) if latest is not None else None
            else:
                row = None
        if row is None:
            return None
        return row["manifest"].encode(), row["manifest_digest"]

    def blob_in_use(self, digest: str) -> bool:
        """True when a registered version references the blob."""
        with self.db.read() as db:
            return store.digest_in_use(db, digest)


def _from_row(row: dict[str, Any]) -> ModelVersion:
    return ModelVersion(
        name=row["name"],
        version=row["version"],
        files=[ModelFile(p, d, s) for p, d, s in row["files"]],
        tags=row["tags"],
        properties=row["properties"],
        description=row["description"],
        framework=row["framework"],
        created_at=row["created_at"],
        manifest_digest=row["manifest_digest"],
    )
