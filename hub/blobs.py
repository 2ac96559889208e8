"""Content-addressed blob store: `DATA_DIR/blobs/sha256/<hex>`, verified on write and before every read.

Writes go to a temp file in the same folder, are checked against the announced
digest (and size), fsynced and renamed into place, so a blob path only ever holds
complete, verified content. Reads re-verify a blob (size + sha256) the first time
this process serves it, and again whenever its inode, size or mtime change; a
corrupt blob raises `CorruptBlob` and is reported in the log, never served.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hub.errors import BadInput, InsufficientStorage, NotFound, StorageError

log = logging.getLogger("hub.blobs")

CHUNK = 1024 * 1024
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# The OCI "empty" config blob `{}` every model manifest points at.
EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest()
# Errors that mean "the disk (or this process's file-size allowance) is full".
_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_BLOB_NAME = re.compile(r"^[0-9a-f]{64}$")


class CorruptBlob(StorageError):
    """A stored blob no longer matches its digest (truncated or altered on disk)."""


def validate_digest(digest: str) -> str:
    """Return `digest` if it is `sha256:<64 lowercase hex>`, else raise BadInput."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise BadInput(f"bad digest {digest!r}: expected 'sha256:' followed by 64 lowercase hex digits")
    return digest


def sha256_file(path: Path) -> tuple[str, int]:
    """The `sha256:<hex>` digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


@dataclass(frozen=True)
class _Stamp:
    """What a verified blob looked like on disk; any change means verify again."""

    ino: int
    size: int
    mtime_ns: int


class BlobWriter:
    """One in-progress upload: feed chunks with `write`, then `commit` (verify + rename) or `abort`."""

    def __init__(self, store: BlobStore, digest: str, expected_size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = expected_size
        self.size = 0
        self._hash = hashlib.sha256()
        fd, tmp = _mkstemp(store.dir, digest)
        self.tmp_path = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        """Append a chunk (disk full → InsufficientStorage, temp file removed)."""
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            self.abort()
            raise BadInput(f"blob {self.digest}: body is larger than the announced {self.expected_size} bytes")
        try:
            self._fh.write(chunk)
        except OSError as exc:
            self._fail(exc)

    def commit(self) -> int:
        """Verify digest and size, fsync and rename into place; return the size."""
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self.abort()
            raise BadInput(
                f"blob {self.digest}: uploaded content has digest {actual} ({self.size} bytes);"
                " was the file changed during the upload?"
            )
        if self.expected_size is not None and self.size != self.expected_size:
            self.abort()
            raise BadInput(f"blob {self.digest}: got {self.size} bytes, announced {self.expected_size}")
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            final = self.store.path(self.digest)
            os.replace(self.tmp_path, final)
            _fsync_dir(self.store.dir)
        except OSError as exc:
            self._fail(exc)
        self.store._remember(self.digest, final)
        return self.size

    def abort(self) -> None:
        """Drop the temp file; nothing is left behind."""
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def _fail(self, exc: OSError) -> None:
        self.abort()
        if exc.errno in _FULL_ERRNOS:
            raise InsufficientStorage(
                f"disk full while storing blob {self.digest} in {self.store.dir}; nothing was stored"
            ) from None
        raise StorageError(f"cannot store blob {self.digest} in {self.store.dir}: {exc.strerror}") from None


class BlobStore:
    """Blobs named by sha256 under `root/blobs/sha256/`."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "blobs" / "sha256"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use blob folder {self.dir}: {(exc.strerror or str(exc)).lower()}") from None
        self._verified: dict[str, _Stamp] = {}
        # digest -> when (time.time) a client last relied on the blob being stored: a HEAD or PUT
        # that found it, a registration naming it, a version deleted with it. Garbage collection
        # spares a blob claimed within its grace period, as it spares one written within it.
        self._claims: dict[str, float] = {}
        self._lock = threading.Lock()
        self._remove_stale_temps()
        if not self.exists(EMPTY_JSON_DIGEST):
            self.put_bytes(EMPTY_JSON)

    # --- names -----------------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        return self.dir / validate_digest(digest).split(":", 1)[1]

    def exists(self, digest: str) -> bool:
        """True when a complete blob with this digest is stored (not re-verified)."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """Size in bytes of a stored blob (NotFound if absent)."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not stored") from None

    # --- writing ---------------------------------------------------------------------------------
    def writer(self, digest: str, expected_size: int | None = None) -> BlobWriter:
        """Start an upload of the blob `digest`; the caller feeds chunks and commits."""
        validate_digest(digest)
        try:
            return BlobWriter(self, digest, expected_size)
        except OSError as exc:
            if exc.errno in _FULL_ERRNOS:
                raise InsufficientStorage(f"disk full: cannot create a temp file in {self.dir}") from None
            raise StorageError(f"cannot create a temp file in {self.dir}: {exc.strerror}") from None

    def put_bytes(self, data: bytes) -> str:
        """Store small content held in memory; return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        w = self.writer(digest, len(data))
        w.write(data)
        w.commit()
        return digest

    def put_file(self, path: Path) -> str:
        """Store a local file by streaming it; return its digest."""
        digest, size = sha256_file(path)
        if self.exists(digest):
            return digest
        w = self.writer(digest, size)
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                w.write(chunk)
        w.commit()
        return digest

    # --- reading ---------------------------------------------------------------------------------
    def verify(self, digest: str) -> int:
        """Check the blob is intact (cached until it changes on disk); return its size.

        NotFound when absent; CorruptBlob (logged) when its content no longer matches.
        """
        path = self.path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not stored") from None
        stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._verified.get(digest) == stamp:
                return st.st_size
        actual, size = sha256_file(path)
        if actual != digest:
            with self._lock:
                self._verified.pop(digest, None)
            log.error("corrupt blob %s at %s: content has digest %s (%d bytes)", digest, path, actual, size)
            raise CorruptBlob(f"blob {digest} is corrupt on disk ({path}: {size} bytes hash to {actual}); not served")
        with self._lock:
            self._verified[digest] = stamp
        return size

    def is_intact(self, digest: str) -> bool:
        """True when the blob is stored and matches its digest (a corrupt one is logged and reads False)."""
        try:
            self.verify(digest)
        except (NotFound, CorruptBlob):
            return False
        return True

    def open_verified(self, digest: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Verify the blob, then yield its bytes [start, end] (inclusive end) in chunks."""
        size = self.verify(digest)
        last = size - 1 if end is None else min(end, size - 1)
        return self._chunks(self.path(digest), start, last)

    @staticmethod
    def _chunks(path: Path, start: int, last: int) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = last - start + 1
            while remaining > 0:
                chunk = fh.read(min(CHUNK, remaining))
                if not chunk:  # shrank while serving: stop short so the client sees a truncated body
                    log.error("blob %s shrank while being served", path.name)
                    return
                remaining -= len(chunk)
                yield chunk

    # --- garbage collection ------------------------------------------------------------------
    def claim(self, digest: str) -> bool:
        """Note that a client relies on this blob from now on; True when it is stored.

        Checked and noted under the lock `collect_if_unwanted` holds, so a blob found here is
        not collected until the grace period after this call has passed.
        """
        path = self.path(digest)
        with self._lock:
            if not path.is_file():
                return False  # nothing to protect (an upload that lands later is new anyway): not remembered
            self._claims[digest] = time.time()
            return True

    def stored_digests(self) -> Iterator[str]:
        """The digests of every stored blob (temp files of uploads in progress are not blobs)."""
        with os.scandir(self.dir) as entries:
            for entry in entries:
                if _BLOB_NAME.fullmatch(entry.name):
                    yield "sha256:" + entry.name

    def collect_if_unwanted(self, digest: str, grace_s: float, now: float | None = None) -> int | None:
        """Delete the blob unless it was written or claimed within `grace_s`; the bytes freed, or None if kept.

        The caller has checked that nothing references it; the age checks and the unlink happen
        under the lock `claim` takes, so a claim is either seen here or sees the blob gone.
        """
        now = time.time() if now is None else now
        path = self.path(digest)
        with self._lock:
            if now - self._claims.get(digest, 0.0) < grace_s:
                return None
            try:
                st = path.stat()
                if now - st.st_mtime < grace_s:
                    return None
                path.unlink()
            except FileNotFoundError:
                return None
            self._verified.pop(digest, None)
            self._claims.pop(digest, None)
        return st.st_size

    def unclaim(self, digests: set[str]) -> None:
        """Drop the claims on these blobs: they may go with the next collection, however recent their use."""
        with self._lock:
            for digest in digests:
                self._claims.pop(digest, None)

    def forget_claims(self, older_than_s: float, now: float | None = None) -> None:
        """Drop claims older than `older_than_s` (they no longer protect anything)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        with self._lock:
            self._claims = {d: t for d, t in self._claims.items() if t >= cutoff}

    def remove(self, digest: str) -> None:
        """Delete a blob (used by garbage collection; missing is fine)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
        with self._lock:
            self._verified.pop(digest, None)

    # --- internals -------------------------------------------------------------------------------
    def _remember(self, digest: str, path: Path) -> None:
        st = path.stat()
        with self._lock:
            self._verified[digest] = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)

    def _remove_stale_temps(self) -> None:
        # Temp files of uploads that a crash interrupted; only this process writes here (data-dir lock).
        for tmp in self.dir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _mkstemp(directory: Path, digest: str) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=f".tmp-{digest[7:19]}-", dir=directory)


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
