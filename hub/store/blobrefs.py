"""Which blobs the hub's state still references: the mark phase of blob garbage collection.

A blob is live when any of these names it:
- a model version's files, or its OCI manifest (stored as a blob too);
- a service generation that devices may still need: the current generation of an active
  service, and any generation a device reports as wanted or still serving (its last-good),
  whether or not the service is still active, since a device stops it only once it hears so.
The service tables belong to the deployments store; this module only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils
from google.protobuf.message import DecodeError

from protos.edgeport.v1 import agent_pb2

# The manifest of a generation whose devices may still pull from it (see the module docstring).
_LIVE_GENERATIONS = """
    SELECT g.manifest FROM service_generations g
    WHERE EXISTS (SELECT 1 FROM services s
                  WHERE s.name = g.service AND s.state = 'active' AND s.generation = g.generation)
       OR EXISTS (SELECT 1 FROM service_status st
                  WHERE st.service = g.service
                    AND (st.generation = g.generation OR st.serving_generation = g.generation))
"""


@dataclass
class References:
    """What one read of the database found: digests named directly, and live service manifests to decode."""

    digests: set[str]
    service_manifests: list[bytes]

    def all_digests(self) -> set[str]:
        """Every referenced digest (decodes the manifests: call after the read is over)."""
        live = set(self.digests)
        for blob in self.service_manifests:
            live.update(_manifest_digests(blob))
        return live


def read_references(db: sqlite_utils.Database) -> References:
    """The blob references of the registry and of live service generations, in one read (no decoding)."""
    digests = {r[0] for r in db.execute("SELECT DISTINCT digest FROM model_files")}
    digests.update(r[0] for r in db.execute("SELECT DISTINCT manifest_digest FROM model_versions"))
    manifests: list[bytes] = []
    if _has_tables(db, "services", "service_generations", "service_status"):
        manifests = [blob for (blob,) in db.execute(_LIVE_GENERATIONS)]
    return References(digests, manifests)


def referenced_digests(db: sqlite_utils.Database) -> set[str]:
    """Every blob digest the registry or a live service generation references."""
    return read_references(db).all_digests()


def _manifest_digests(blob: bytes) -> set[str]:
    """The model files, model manifests and source files a serialized ServiceManifest names."""
    try:
        manifest = agent_pb2.ServiceManifest.FromString(blob)
    except DecodeError:
        return set()
    digests = {f.digest for f in manifest.source.files}
    for model in manifest.models:
        digests.update(f.digest for f in model.files)
        if model.manifest_digest:
            digests.add(model.manifest_digest)
    return digests


def _has_tables(db: sqlite_utils.Database, *names: str) -> bool:
    placeholders = ", ".join("?" * len(names))
    found = db.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ({placeholders})", list(names)
    ).fetchone()
    return bool(found and found[0] == len(names))
