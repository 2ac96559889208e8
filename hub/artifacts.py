"""The pull side of the OCI distribution API, over the blob store: which repositories exist, manifests, blobs.

Repositories come from the services that own them: the registry answers for
`models/NAME`; the hub's composition root (`hub.services`) adds the deployments' resolver for `sources/SERVICE`.
A blob is served under any known repository once the blob store has verified it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hub.blobs import DIGEST_RE, BlobStore, validate_digest
from hub.errors import BadInput, NotFound
from hub.registry import MANIFEST_MEDIA_TYPE, RegistryService

# Repository names per the distribution spec: lowercase/uppercase path components joined by '/'.
REPOSITORY_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
MAX_REPOSITORY_CHARS = 512  # "models/" or "sources/" and a name of at most 255 characters
# A tag per the distribution spec (ASCII only), or a digest.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")

KnowsRepository = Callable[[str], bool]
ManifestLookup = Callable[[str, str], tuple[bytes, str] | None]
TagLister = Callable[[str], list[str] | None]


class UnknownRepository(NotFound):
    """The repository is not one the hub serves."""


class UnknownManifest(NotFound):
    """No manifest under that tag or digest."""


class UnknownBlob(NotFound):
    """No such blob stored."""


class RangeNotSatisfiable(BadInput):
    """The requested byte range lies outside the blob."""

    http_status = 416


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range [start, end] of a blob of `size` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start + 1


def parse_range(header: str, size: int) -> ByteRange:
    """Parse a single `bytes=` range (`a-b`, `a-`, `-n`) against a blob size; RangeNotSatisfiable if empty."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise RangeNotSatisfiable(f"unsupported Range {header!r}: only one 'bytes=' range is served")
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise RangeNotSatisfiable(f"bad Range {header!r}")
    try:
        if first == "":  # suffix: the last N bytes
            n = int(last)
            if n <= 0:
                raise RangeNotSatisfiable(f"Range {header!r} asks for no bytes")
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        raise RangeNotSatisfiable(f"bad Range {header!r}") from None
    if start < 0 or start >= size or end < start:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the blob ({size} bytes)")
    return ByteRange(start, min(end, size - 1), size)


class ArtifactService:
    """Resolve OCI pull requests against the registry (and other services' repositories) and the blob store."""

    def __init__(self, blobs: BlobStore, registry: RegistryService) -> None:
        self.blobs = blobs
        # hub.services adds resolvers of other services: does this repository exist? its manifests by tag or digest.
        self.repository_resolvers: list[KnowsRepository] = [registry.knows_repository]
        self.manifest_lookups: list[ManifestLookup] = [registry.manifest]
        self.tag_listers: list[TagLister] = [registry.tags]
        self._seen: set[str] = set()

    def check_repository(self, repository: str) -> None:
        """Raise UnknownRepository unless some room serves this repository."""
        if repository in self._seen:
            return
        well_formed = len(repository) <= MAX_REPOSITORY_CHARS and REPOSITORY_RE.fullmatch(repository)
        if not well_formed or not any(known(repository) for known in self.repository_resolvers):
            raise UnknownRepository(f"repository {repository!r} is not known to this hub")
        # Resolvers answer "was it ever created" (a model or service name is never reused for
        # something else), so a yes stays true: remember it and skip the query next time.
        if len(self._seen) < 100_000:
            self._seen.add(repository)

    def repository_seen(self, repository: str) -> bool:
        """Whether `check_repository` already accepted this repository (no database access)."""
        return repository in self._seen

    def tags(self, repository: str) -> list[str]:
        """The tags of a known repository (empty when it has none)."""
        self.check_repository(repository)
        for lister in self.tag_listers:
            found = lister(repository)
            if found is not None:
                return found
        return []

    def manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(manifest bytes, digest, media type) of `repository` at a tag or digest."""
        self.check_repository(repository)
        if not TAG_RE.fullmatch(reference) and not DIGEST_RE.fullmatch(reference):
            shown = reference if len(reference) <= 60 else reference[:57] + "..."
            raise UnknownManifest(f"manifest {repository}:{shown!r} not found: not a tag or sha256 digest")
        for lookup in self.manifest_lookups:
            found = lookup(repository, reference)
            if found is not None:
                return found[0], found[1], MANIFEST_MEDIA_TYPE
        raise UnknownManifest(f"manifest {repository}:{reference} not found")

    def blob_size(self, repository: str, digest: str) -> int:
        """Verify the blob (corrupt → CorruptBlob) and return its size."""
        self.check_repository(repository)
        try:
            validate_digest(digest)
        except BadInput:
            raise UnknownBlob(f"blob {digest!r} is not a sha256 digest") from None
        try:
            return self.blobs.verify(digest)
        except NotFound:
            raise UnknownBlob(f"blob {digest} not found in {repository}") from None

    def blob_chunks(self, digest: str, byte_range: ByteRange | None = None) -> Iterator[bytes]:
        """The blob's bytes (whole or a range) in chunks; call `blob_size` first."""
        if byte_range is None:
            return self.blobs.open_verified(digest)
        return self.blobs.open_verified(digest, byte_range.start, byte_range.end)
