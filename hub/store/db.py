"""Opening the hub database: one process per data dir, WAL, the tables the caller names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from hub.errors import BadInput, Conflict, InsufficientStorage, StorageError

log = logging.getLogger("hub.store")

SchemaFn = Callable[[sqlite_utils.Database], None]

RESERVE_FILE = "space.reserve"
RESERVE_BYTES = 16 * 1024 * 1024  # room for deleting a version (and the WAL pages it writes) on a full disk



class DataDirLocked(Conflict):
    """Another hub process already serves this data dir."""


class SpaceReserve:
    """A file of real (allocated) blocks kept in the data dir, given up when the disk is full.

    Once the disk is full, SQLite cannot even delete (a delete writes pages to the WAL), so
    the way out - deleting a version and collecting its blobs - would fail too. Whoever frees
    space (a delete) releases the reserve and retries; the blob collector re-creates it once
    there is room again.
    """

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True when the reserve file is in place at full size."""
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Create the reserve if it is missing; False (and nothing left behind) when the disk has no room."""
        with self._lock:
            if self.held:
                return True
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    _allocate(fd, self.size)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    return False
                log.warning("cannot keep a space reserve at %s: %s", self.path, exc.strerror or exc)
                return False
            return True

    def release(self) -> int:
        """Delete the reserve file; the bytes it gave back (0 when there was none)."""
        with self._lock:
            try:
                size = self.path.stat().st_size
                self.path.unlink()
            except FileNotFoundError:
                return 0
        log.warning("disk full: released the %d-byte space reserve %s so deleting can proceed", size, self.path)
        return size


def _allocate(fd: int, size: int) -> None:
    # Real blocks, not a sparse file: only allocated space is given back when the file goes.
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        chunk = b"\0" * (1024 * 1024)
        written = 0
        while written < size:
            written += os.write(fd, chunk[: size - written])


class Database:
    """The hub's SQLite database.

    One `Database` per process and data dir; an exclusive `flock` on
    `DATA_DIR/hub.lock` refuses a second hub on the same dir before it touches
    anything. Access is serialized with a lock so the same connection can be used
    from the event loop and worker threads.
    """

    def __init__(self, data_dir: Path, schemas: Iterable[SchemaFn] = (), *, lock: bool = True) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot use data dir {self.data_dir}: {(exc.strerror or str(exc)).lower()}") from None
        self._lock_fd: int | None = None
        self.reserve = SpaceReserve(self.data_dir / RESERVE_FILE)
        if lock:
            self._acquire_dir_lock()
            self.reserve.ensure()  # best effort: on an already full disk there is none until space is freed
        try:
            conn = sqlite3.connect(self.data_dir / "hub.db", check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            self.db = sqlite_utils.Database(conn)
            self._mutex = threading.RLock()
            self._depth = 0  # open transaction levels (guarded by _mutex): >0 makes nested ones savepoints
            with self._mutex:
                for fn in schemas:
                    fn(self.db)
            # A second, read-only connection for the control plane's hot reads: in WAL mode it sees
            # the last commit and never waits for the writer's open transaction (group commit).
            reader = sqlite3.connect(self.data_dir / "hub.db", check_same_thread=False, isolation_level=None)
            reader.execute("PRAGMA query_only=ON")
            reader.execute("PRAGMA busy_timeout=5000")
            self._reader = sqlite_utils.Database(reader)
            self._reader_mutex = threading.Lock()
            self._owner = 0  # thread id holding the open transaction (with _depth > 0)
            self.on_commit: Callable[[float], None] | None = None  # seconds BEGIN..COMMIT took (hub/metrics.py)
        except sqlite3.DatabaseError as exc:
            self._release_dir_lock()
            raise StorageError(f"{self.data_dir / 'hub.db'} is not a usable hub database: {exc}") from None

    def _acquire_dir_lock(self) -> None:
        try:
            fd = os.open(self.data_dir / "hub.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BadInput(f"cannot use data dir {self.data_dir}: {(exc.strerror or str(exc)).lower()}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"data dir {self.data_dir} is in use by another hub process (lock {self.data_dir / 'hub.lock'})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """Run the block in one SQLite transaction (all or nothing), serialized.

        Nested inside another `transaction()` of the same thread, the block is a savepoint:
        it is undone alone if it raises, and committed with the outer transaction. This is how
        the agent channel stores a batch of messages in one commit (group commit) while each
        message's writes stay all-or-nothing.
        """
        with self._mutex:
            conn = self.db.conn
            if self._depth:
                yield from self._savepoint(conn)
                return
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            self._depth, self._owner = 1, threading.get_ident()
            try:
                yield self.db
                conn.execute("COMMIT")
                if self.on_commit is not None:
                    self.on_commit(time.perf_counter() - started)
            except sqlite3.OperationalError as exc:
                _rollback(conn)
                if "full" in str(exc):  # "database or disk is full": the transaction left nothing behind
                    raise InsufficientStorage(f"disk full: the hub database in {self.data_dir} cannot grow") from None
                raise
            except BaseException:
                _rollback(conn)
                raise
            finally:
                self._depth = 0

    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[sqlite_utils.Database]:
        name = f"sp{self._depth}"
        conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield self.db
        except BaseException:
            if conn.in_transaction:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        else:
            conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """Serialized access for reads (and single-statement writes)."""
        with self._mutex:
            yield self.db

    @contextmanager
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        """Read-only access that does not wait for an open transaction: it sees the last commit.

        Inside this thread's own transaction it reads through that transaction instead, so a
        caller always sees its own writes.
        """
        if self._depth and self._owner == threading.get_ident():
            with self._mutex:
                yield self.db
            return
        with self._reader_mutex:
            yield self._reader

    def close(self) -> None:
        """Close the connection and release the data-dir lock."""
        with self._mutex:
            self.db.conn.close()
        with self._reader_mutex:
            self._reader.conn.close()
        self._release_dir_lock()

    def _release_dir_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL); then ROLLBACK raises.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
