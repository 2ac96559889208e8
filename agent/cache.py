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

import contextlib
import hashlib
import http.client
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

CHUNK = 1024 * 1024
DEFAULT_MAX_BYTES = 10 * 1024**3

Progress = Callable[[int, int], None]  # (bytes so far, total)

# Keep-alive connections to registries, shared by the pulls of this process: a new TCP connection per
# blob costs both sides a handshake, and the hub's server its connection setup. Idle ones are reused for
# at most POOL_IDLE_S (below uvicorn's 5 s keep-alive, so the server is not closing the one we pick).
POOL_IDLE_S = 4.0
POOL_MAX_IDLE = 8  # per registry
_pool_lock = threading.Lock()
_pool: dict[tuple[str, str], list[tuple[float, http.client.HTTPConnection]]] = {}


def _connection(
    scheme: str, netloc: str, timeout: float, fresh: bool = False
) -> tuple[http.client.HTTPConnection, bool]:
    """(a connection to `netloc`, whether it was reused from the pool); `fresh`: a new one, never a pooled one."""
    now = time.monotonic()
    with _pool_lock:
        idle = _pool.get((scheme, netloc), [])
        while idle and not fresh:
            since, conn = idle.pop()
            if now - since < POOL_IDLE_S:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                return conn, True
            conn.close()
    conn_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    return conn_cls(netloc, timeout=timeout), False


def _release(scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
    """Give a connection whose last response was read to the end back to the pool."""
    with _pool_lock:
        idle = _pool.setdefault((scheme, netloc), [])
        if len(idle) < POOL_MAX_IDLE:
            idle.append((time.monotonic(), conn))
            return
    conn.close()


def close_pool() -> None:
    """Close every idle registry connection (tests; an agent leaves them to the process exit)."""
    with _pool_lock:
        conns = [conn for idle in _pool.values() for _, conn in idle]
        _pool.clear()
    for conn in conns:
        conn.close()


class CacheError(Exception):
    """A blob could not be fetched or did not verify (message says which and why).

    `transient` is True when trying again later may work (network cut, hub busy or down);
    False when it will not (unknown blob, corrupt bytes, malformed digest).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise CacheError(f"unsupported or malformed digest {digest!r} (expected sha256:<64 hex>)")
    return hexpart


class ArtifactCache:
    """Content-addressed blob cache of one agent (`DATA_DIR/cache`)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = 30.0,
        sync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.root = Path(root)
        self.sync = sync  # makes a written file's bytes durable (given its fd)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.blob_dir = self.root / "blobs" / "sha256"
        self.partial_dir = self.root / "partial"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)

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

    def fetch(
        self, registry: str, repository: str, digest: str, size: int = -1, progress: Progress | None = None
    ) -> Path:
        """The verified blob `digest`, pulled from `registry`/v2/`repository`/blobs/ when missing.

        Resumes a `.partial` left by an interrupted pull with a Range request; a blob whose
        bytes do not hash to `digest` (or whose size differs from a known `size`) is deleted and
        refused with CacheError, never kept.
        """
        hexpart = _hex(digest)
        final = self.blob_dir / hexpart
        if final.is_file():
            self.touch(digest)
            return final
        partial = self.partial_dir / f"{hexpart}.partial"
        hasher = hashlib.sha256()
        have = 0
        if partial.exists():  # hash what an earlier attempt got, then ask only for the rest
            with open(partial, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    hasher.update(chunk)
                    have += len(chunk)
            if 0 <= size < have:  # longer than the blob can be: start over
                partial.unlink()
                hasher, have = hashlib.sha256(), 0
        if size < 0 or have < size:
            hasher, have = self._download(registry, repository, digest, partial, hasher, have, size, progress)
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
            raise CacheError(f"blob {digest} from {repository} is corrupt: its bytes hash to sha256:{got}")
        with open(partial, "rb") as fh:  # durable before the rename: a blob in blobs/ is never half-written
            self.sync(fh.fileno())
        os.chmod(partial, 0o444)  # runtimes see hardlinks of cached blobs: keep them from editing the cache
        os.replace(partial, final)
        return final

    def _download(
        self,
        registry: str,
        repository: str,
        digest: str,
        partial: Path,
        hasher: hashlib._Hash,
        have: int,
        size: int,
        progress: Progress | None,
    ) -> tuple[hashlib._Hash, int]:
        url = urllib.parse.urlsplit(registry if "://" in registry else f"http://{registry}")
        path = f"{url.path.rstrip('/')}/v2/{repository}/blobs/{digest}"
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn, reused = _connection(url.scheme, url.netloc, self.timeout_s)
        keep = False  # whether the connection goes back to the pool afterwards
        try:
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException):
                if not reused:
                    raise
                # The server closed the idle connection just as we picked it: one more try on a new one.
                conn.close()
                conn, reused = _connection(url.scheme, url.netloc, self.timeout_s, fresh=True)
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
            if resp.status == 200 and have:  # server ignored the Range: start from zero
                hasher, have = hashlib.sha256(), 0
                mode = "wb"
            elif resp.status in (200, 206):
                mode = "ab" if have else "wb"
            elif resp.status == 416 and have:  # we already hold everything the server has
                return hasher, have
            else:
                body = resp.read(2000).decode(errors="replace").strip()
                raise CacheError(
                    f"pull {registry}{path}: HTTP {resp.status}: {body[:300]}",
                    transient=resp.status >= 500 or resp.status == 429,
                )
            total = size if size >= 0 else have + int(resp.getheader("Content-Length", "0") or 0)
            with open(partial, mode) as fh:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    if progress:
                        progress(have, total)
            keep = resp.isclosed() and not resp.will_close
        except (OSError, http.client.HTTPException) as exc:
            # What arrived stays in .partial: the next attempt resumes from there.
            raise CacheError(f"pull {registry}{path} interrupted after {have} bytes: {exc}", transient=True) from None
        finally:
            if keep:
                _release(url.scheme, url.netloc, conn)
            else:
                conn.close()
        return hasher, have

    def usage(self) -> int:
        """Bytes held by verified blobs."""
        return sum(p.stat().st_size for p in self.blob_dir.iterdir() if p.is_file())

    def evict(self, keep: Iterable[str]) -> list[str]:
        """Delete least recently used blobs not in `keep` until usage fits the bound; return their digests."""
        keep_hex = {_hex(d) for d in keep}
        entries = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.blob_dir.iterdir() if p.is_file()]
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
        return evicted

    def clean_partials(self, older_than_s: float = 7 * 86400) -> None:
        """Remove partial downloads nobody resumed for a long time."""
        cutoff = time.time() - older_than_s
        for p in self.partial_dir.iterdir():
            if p.stat().st_mtime < cutoff:
                p.unlink(missing_ok=True)
