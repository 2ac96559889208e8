"""ArtifactCache: blobs pulled from an OCI endpoint, content-addressed and sha256-verified.

Layout under the cache root:
    blobs/sha256/<hex>        verified blobs (read-only; renamed into place only after the digest matched)
    partial/<hex>.partial     an interrupted download: resumed with an HTTP Range request

A blob in `blobs/` was verified before the rename, so after an agent restart it is used as is
(never downloaded again). Use is recorded in the file's mtime, which gives LRU order for
eviction when the cache grows past its bound; blobs named in `keep` (what current and
last-good generations use) are never evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from agent.registry_client import RegistryClient, RegistryUnreachable

CHUNK = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * 1024**3


class CacheError(Exception):
    """A blob could not be fetched or did not verify (message says which and why).

    `transient` is True when trying again later may work (network cut, hub busy or down);
    False when it will not (unknown blob, corrupt bytes, malformed digest). `status` is the HTTP
    status of a registry that answered with an error (0 when it did not answer): a registry that
    keeps answering 500 (a blob damaged on its disk) is retried only for a bounded time.
    """

    def __init__(self, message: str, *, transient: bool = False, status: int = 0) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def _hex(digest: str) -> str:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise CacheError(f"unsupported or malformed digest {digest!r} (expected sha256:<64 hex>)")
    return match.group(1)


class ArtifactCache:
    """Content-addressed blob cache of one agent (`DATA_DIR/cache`)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        sync: Callable[[int], None] = os.fsync,
        client: RegistryClient | None = None,
        pull_token: str = "",
    ) -> None:
        self.root = Path(root)
        # The device pull token, sent as Bearer with every pull. Pulls go only to the registry a manifest
        # names, and a manifest is used only once its hub signature verified: the hub's own /v2/, or the
        # artifact endpoint the hub put in front of it (a mirror passes the token on).
        self.pull_token = pull_token
        self.sync = sync  # makes a written file's bytes durable (given its fd)
        self.client = client or RegistryClient()  # agents of one process share one: its connections
        self.max_bytes = max_bytes
        self.blob_dir = self.root / "blobs" / "sha256"
        self.partial_dir = self.root / "partial"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        # Bytes held, kept up to date by fetch and evict so an evict under the bound needs no folder scan
        # (one per deploy); None until the first evict scans. A scan also corrects it whenever it is over.
        self._usage: int | None = None
        self._pulling: dict[str, tuple[asyncio.Lock, int]] = {}  # blob hex -> (its pull's lock, tasks using it)

    def path(self, digest: str) -> Path:
        """Where the verified blob `digest` lives (whether or not it is there)."""
        return self.blob_dir / _hex(digest)

    def has(self, digest: str) -> bool:
        """Whether the verified blob is in the cache."""
        return self.path(digest).is_file()

    def touch(self, digest: str) -> None:
        """Record a use of the blob (LRU order)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path(digest))

    async def fetch(self, registry: str, repository: str, digest: str, size: int = -1) -> Path:
        """The verified blob `digest`, pulled from `registry`/v2/`repository`/blobs/ when missing.

        Resumes a `.partial` left by an interrupted pull with a Range request; a blob whose
        bytes do not hash to `digest` (or whose size differs from a known `size`) is deleted and
        refused with CacheError, never kept. Runs on the event loop; only the fsync (and hashing
        a partial left by an earlier attempt) go to a thread.
        """
        hexpart = _hex(digest)
        final = self.blob_dir / hexpart
        if final.is_file():
            self.touch(digest)
            return final
        # One pull per blob at a time: two services deploying at once may want the same blob, and two pulls
        # writing one .partial would corrupt it, and the second would find it already renamed away.
        lock, users = self._pulling.get(hexpart, (asyncio.Lock(), 0))
        self._pulling[hexpart] = (lock, users + 1)
        try:
            async with lock:
                if final.is_file():  # the pull we waited for got it
                    self.touch(digest)
                    return final
                return await self._pull(registry, repository, digest, hexpart, size)
        finally:
            lock, users = self._pulling[hexpart]
            if users > 1:
                self._pulling[hexpart] = (lock, users - 1)
            else:
                del self._pulling[hexpart]

    async def _pull(self, registry: str, repository: str, digest: str, hexpart: str, size: int) -> Path:
        """Download (or resume) `digest` into partial/, verify it, and move it into blobs/."""
        final = self.blob_dir / hexpart
        partial = self.partial_dir / f"{hexpart}.partial"
        hasher = hashlib.sha256()
        have = 0
        if partial.exists():  # hash what an earlier attempt got, then ask only for the rest
            hasher, have = await asyncio.to_thread(_hash_file, partial)
            if 0 <= size < have:  # longer than the blob can be: start over
                partial.unlink()
                hasher, have = hashlib.sha256(), 0
        if size < 0 or have < size:
            hasher, have = await self._download(registry, repository, digest, partial, hasher, have)
        if 0 <= have < size:  # the connection ended early: keep the .partial for the next attempt
            raise CacheError(
                f"pull of blob {digest} from {repository} interrupted at {have} of {size} bytes", transient=True
            )
        if 0 <= size < have:
            partial.unlink(missing_ok=True)
            raise CacheError(f"blob {digest} from {repository}: got {have} bytes, expected {size}")
        if hasher.hexdigest() != hexpart:
            partial.unlink(missing_ok=True)
            got = hasher.hexdigest()
            raise CacheError(
                f"blob {digest} from {repository} is corrupt (digest mismatch): its bytes hash to sha256:{got}"
            )
        # A zero-byte blob (an empty __init__.py) has no body to write, so nothing made the .partial file.
        partial.touch(exist_ok=True)
        fd = os.open(partial, os.O_RDONLY)
        try:  # durable before the rename: a blob in blobs/ is never half-written
            await asyncio.to_thread(self.sync, fd)
        finally:
            os.close(fd)
        os.chmod(partial, 0o444)  # runtimes see hardlinks of cached blobs: keep them from editing the cache
        os.replace(partial, final)
        if self._usage is not None:
            self._usage += have
        return final

    async def _download(
        self,
        registry: str,
        repository: str,
        digest: str,
        partial: Path,
        hasher: hashlib._Hash,
        have: int,
    ) -> tuple[hashlib._Hash, int]:
        url = urllib.parse.urlsplit(registry if "://" in registry else f"http://{registry}")
        path = f"{url.path.rstrip('/')}/v2/{repository}/blobs/{digest}"
        headers = {"Range": f"bytes={have}-"} if have else {}
        if self.pull_token:
            headers["Authorization"] = f"Bearer {self.pull_token}"
        sink = _PartialFile(partial, hasher, have)
        try:
            response = await self.client.get(f"{url.scheme}://{url.netloc}{path}", sink.write, headers)
        except RegistryUnreachable as exc:
            # What arrived stays in .partial: the next attempt resumes from there.
            raise CacheError(
                f"pull {registry}{path} interrupted after {sink.have} bytes: {exc}", transient=True
            ) from None
        finally:
            sink.close()
        if response.status == 416 and have:  # we already hold everything the server has
            return hasher, have
        if response.status not in (200, 206):
            said = _registry_message(response.error_body)
            message = f"pull {registry}{path}: HTTP {response.status}: {said}"
            if "corrupt" in said.lower():
                message = f"the registry {registry} says blob {digest} of {repository} is corrupt: {said}"
            raise CacheError(
                message,
                transient=response.status >= 500 or response.status == 429,
                status=response.status,
            )
        return sink.hasher, sink.have

    def usage(self) -> int:
        """Bytes held by verified blobs."""
        return sum(p.stat().st_size for p in self.blob_dir.iterdir() if p.is_file())

    def evict(self, keep: Iterable[str]) -> list[str]:
        """Delete least recently used blobs not in `keep` until usage fits the bound; return their digests."""
        if self._usage is not None and self._usage <= self.max_bytes:
            return []
        keep_hex = {_hex(d) for d in keep}
        entries = []
        for p in self.blob_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                if stat.S_ISREG(st.st_mode):
                    entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        evicted: list[str] = []
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            if p.name in keep_hex:
                continue
            p.unlink(missing_ok=True)
            total -= size
            evicted.append(f"sha256:{p.name}")
        self._usage = total
        return evicted

    def clean_partials(self, older_than_s: float = 7 * 86400) -> None:
        """Remove partial downloads nobody resumed for a long time."""
        cutoff = time.time() - older_than_s
        for p in self.partial_dir.iterdir():
            if p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)


class _PartialFile:
    """Where a pull's body goes: appended to the `.partial` file and hashed as it arrives. A 200 to a Range
    request (the server ignored it) starts the file and the hash over."""

    def __init__(self, path: Path, hasher: hashlib._Hash, have: int) -> None:
        self.path, self.hasher, self.have = path, hasher, have
        self.resumed = have > 0
        self._file: BinaryIO | None = None

    def write(self, data: bytes, status: int) -> None:
        if self._file is None:
            if status == 200 and self.resumed:
                self.hasher, self.have = hashlib.sha256(), 0
            self._file = open(self.path, "ab" if self.have else "wb")  # noqa: SIM115 (closed by close())
        self._file.write(data)
        self.hasher.update(data)
        self.have += len(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _registry_message(body: bytes) -> str:
    """The message of a registry's error answer: OCI's `errors[0].message` or the hub's `error.message`, else
    the start of the body as it came."""
    text = body.decode(errors="replace").strip()
    with contextlib.suppress(ValueError, TypeError, KeyError, IndexError, AttributeError):
        parsed = json.loads(text)
        errors = parsed.get("errors")
        message = errors[0]["message"] if errors else parsed["error"]["message"]
        if isinstance(message, str) and message:
            return message[:300]
    return text[:300]


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    """(sha256 so far, length) of what an earlier pull left in `path`."""
    hasher, have = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
            have += len(chunk)
    return hasher, have
