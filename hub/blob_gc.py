"""Blob garbage collection: reclaim the space of blobs nothing references any more.

Mark and sweep. Mark: every blob a model version (files and manifest) or a live service
generation (see `hub.store.blobrefs`) names, read in one go from the database. Sweep: every
other stored blob whose file was written, and which no client claimed (HEAD/PUT that found it,
a registration naming it, the delete of a version holding it), more than the grace period ago.
The grace period protects uploads in flight: a folder registration uploads its blobs first and
names them only when it registers the version. Temp files of uploads are never touched.

`hub serve` runs the hub's `BlobCollector` every `--blob-gc-interval` (it is a component);
`POST /api/v1/blobs/gc` runs it once. Each run logs what it reclaimed and re-creates the database's
space reserve when a full disk had used it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.blobs import BlobStore
    from hub.store import Database

from hub.serve_config import DEFAULT_BLOB_GC_INTERVAL_S, DEFAULT_BLOB_GRACE_S

log = logging.getLogger("hub.blob_gc")



@dataclass(frozen=True)
class CollectionReport:
    """What one run found and did."""

    collected: int  # blobs deleted
    reclaimed_bytes: int
    referenced: int  # stored blobs something references
    recent: int  # unreferenced blobs spared because they were written or claimed within the grace period
    grace_s: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The API's JSON form."""
        return {
            "collected": self.collected,
            "reclaimed_bytes": self.reclaimed_bytes,
            "referenced": self.referenced,
            "recent": self.recent,
            "grace_s": self.grace_s,
            "seconds": round(self.seconds, 3),
        }


class BlobCollector:
    """Collect unreferenced blobs older than the grace period: once (`collect`) or periodically (`start`)."""

    def __init__(
        self, db: Database, blobs: BlobStore, *, grace_s: float = DEFAULT_BLOB_GRACE_S,
        interval_s: float = DEFAULT_BLOB_GC_INTERVAL_S,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.grace_s = grace_s
        self.interval_s = interval_s
        self._run_lock = threading.Lock()  # one run at a time (periodic and on request)
        self._task: asyncio.Task[None] | None = None

    def collect(self, grace_s: float | None = None) -> CollectionReport:
        """Run mark and sweep once (blocking; call off the event loop) and log what was reclaimed."""
        from hub.blobs import EMPTY_JSON_DIGEST
        from hub.store.blobrefs import read_references

        grace = self.grace_s if grace_s is None else grace_s
        with self._run_lock:
            started = time.monotonic()
            now = time.time()
            # The last commit, read without waiting for (or holding up) the writer. Whatever commits
            # later names blobs that were claimed or written within the grace period, so it is safe.
            with self.db.snapshot() as db:
                references = read_references(db)
            live = references.all_digests()
            live.add(EMPTY_JSON_DIGEST)
            collected = reclaimed = referenced = recent = 0
            for digest in self.blobs.stored_digests():
                if digest in live:
                    referenced += 1
                    continue
                freed = self.blobs.collect_if_unwanted(digest, grace, now)
                if freed is None:
                    recent += 1
                else:
                    collected += 1
                    reclaimed += freed
            self.blobs.forget_claims(max(grace, self.grace_s), now)
            report = CollectionReport(collected, reclaimed, referenced, recent, grace, time.monotonic() - started)
        if collected:
            log.info(
                "blob gc: reclaimed %d blob(s), %d bytes; kept %d referenced and %d younger than %gs",
                collected, reclaimed, referenced, recent, grace,
            )
        else:
            log.debug("blob gc: nothing to reclaim (%d referenced, %d recent)", referenced, recent)
        if not self.db.reserve.held and not self.db.reserve.ensure():
            log.warning("disk still full: the space reserve %s could not be re-created", self.db.reserve.path)
        return report

    async def start(self) -> None:
        """Run every `interval_s` in a worker thread (not at all when the interval is 0)."""
        if self.interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._every_interval())
            log.info("blob gc every %gs, grace period %gs", self.interval_s, self.grace_s)

    async def stop(self) -> None:
        """Stop the periodic runs, after the one in progress (if any) has finished."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            # A run in its worker thread still uses the database: wait for it before the hub closes it.
            await asyncio.to_thread(self._run_lock.acquire)
            self._run_lock.release()

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.collect)
            except Exception:  # keep collecting next time; a failed run deleted nothing it should not have
                log.exception("blob gc run failed")
