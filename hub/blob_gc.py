"""Blob garbage collection: reclaim the space of blobs nothing references any more.

Mark and sweep. Mark: every blob a model version (files and manifest) or a live service
generation (see `hub.store.blobrefs`) names, read in one go from the database. Sweep: every
other stored blob whose file was written, and which no client claimed (HEAD/PUT that found it,
a registration naming it, the delete of a version holding it), more than the grace period ago.
The grace period protects uploads in flight: a folder registration uploads its blobs first and
names them only when it registers the version. Temp files of uploads are never touched.

`hub serve` runs a `BlobCollector` every `--blob-gc-interval` (`blob_collector`, the component);
`POST /api/v1/blobs/gc` runs it once. Each run logs what it reclaimed and re-creates the database's
space reserve when a full disk had used it up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.errors import BadInput

if TYPE_CHECKING:
    from hub.blobs import BlobStore
    from hub.services import HubServices
    from hub.store import Database

log = logging.getLogger("hub.blob_gc")

DEFAULT_GRACE_S = 3600.0
DEFAULT_INTERVAL_S = 600.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
        self, db: Database, blobs: BlobStore, *, grace_s: float = DEFAULT_GRACE_S,
        interval_s: float = DEFAULT_INTERVAL_S,
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


_COLLECTORS: weakref.WeakKeyDictionary[BlobStore, BlobCollector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK = threading.Lock()


def collector_for(services: HubServices) -> BlobCollector:
    """The one collector of this hub's blob store (created with the defaults on first use)."""
    with _COLLECTORS_LOCK:
        collector = _COLLECTORS.get(services.blobs)
        if collector is None:
            collector = _COLLECTORS[services.blobs] = BlobCollector(services.db, services.blobs)
        return collector


def parse_seconds(text: str, what: str) -> float:
    """Seconds from '90', '90s', '30m', '1h' or '7d' (0 allowed); BadInput naming `what` otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise BadInput(f"bad {what} {text!r}: use seconds or a number with s, m, h or d (e.g. 1h)")
    return seconds


def _duration_argument(what: str) -> Any:
    def parse(text: str) -> float:
        try:
            return parse_seconds(text, what)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return parse


def add_serve_options(parser: argparse.ArgumentParser) -> None:
    """`hub serve` options of the blob collector."""
    parser.add_argument(
        "--blob-grace", type=_duration_argument("--blob-grace"), default=DEFAULT_GRACE_S, metavar="DURATION",
        help="keep unreferenced blobs this long after they were uploaded or last used, so uploads in flight "
        f"are never collected (default: {DEFAULT_GRACE_S:g}s)",
    )
    parser.add_argument(
        "--blob-gc-interval", type=_duration_argument("--blob-gc-interval"), default=DEFAULT_INTERVAL_S,
        metavar="DURATION",
        help=f"collect unreferenced blobs this often; 0 turns it off (default: {DEFAULT_INTERVAL_S:g}s)",
    )


def blob_collector(services: HubServices, config: object) -> BlobCollector:
    """The periodic collector as a `hub serve` component, set from the config's `blob_grace_s` and
    `blob_gc_interval_s` (the defaults where the config has none)."""
    collector = collector_for(services)
    collector.grace_s = float(getattr(config, "blob_grace_s", DEFAULT_GRACE_S))
    collector.interval_s = float(getattr(config, "blob_gc_interval_s", DEFAULT_INTERVAL_S))
    return collector
