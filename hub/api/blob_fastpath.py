"""A lean path for a fleet's hottest request: GET of a small blob from the OCI endpoint.

When thousands of agents pull the same model at once, FastAPI's routing, dependency
injection and thread-pool hop cost more than the bytes. This ASGI middleware answers a
plain `GET /v2/<repository>/blobs/sha256:<hex>` (no Range) for a blob up to `MAX_BYTES`
from memory, with the regular route's headers, once that route has seen the repository.
Everything else (HEAD, Range, big blobs, a repository not yet seen, any error) goes to
the regular route in `hub/api/oci.py`, which gives the same answers and error bodies.
The blob is still checked against its digest whenever its file changed (BlobStore.verify).
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

from hub.errors import HubError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from hub.services import HubServices

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

MAX_BYTES = 1024 * 1024
CACHE_BYTES = 64 * 1024 * 1024  # held in memory at most; past it the cache starts over
_BLOB_PATH = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


class SmallBlobCache:
    """Bytes of small verified blobs, dropped whenever the file on disk changes."""

    def __init__(self, services: HubServices) -> None:
        self.blobs = services.blobs
        self.artifacts = services.artifacts
        self._lock = threading.Lock()
        self._data: dict[str, tuple[int, bytes]] = {}  # digest -> (file size when read, bytes)
        self._bytes = 0

    def get(self, repository: str, digest: str) -> bytes | None:
        """The blob's bytes, or None when the regular route should answer."""
        if not self.artifacts.repository_seen(repository):
            return None
        try:
            size = self.blobs.verify(digest)  # a stat; re-hashes only a file that changed
        except HubError:
            return None
        if size > MAX_BYTES:
            return None
        with self._lock:
            cached = self._data.get(digest)
        if cached is not None and cached[0] == size:
            return cached[1]
        try:
            data = b"".join(self.blobs.open_verified(digest))
        except (HubError, OSError):
            return None
        if len(data) != size:
            return None
        with self._lock:
            if self._bytes + len(data) > CACHE_BYTES:
                self._data.clear()
                self._bytes = 0
            self._data[digest] = (size, data)
            self._bytes += len(data)
        return data


class BlobFastPath:
    """ASGI middleware: serve cacheable small-blob GETs directly, pass everything else on."""

    def __init__(self, app: ASGIApp, services: HubServices) -> None:
        self.app = app
        self.cache = SmallBlobCache(services)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _BLOB_PATH.match(scope["path"])
            if match and not any(name == b"range" for name, _ in scope["headers"]):
                body = self.cache.get(match["repo"], match["digest"])
                if body is not None:
                    await _send_blob(send, match["digest"], body)
                    return
        await self.app(scope, receive, send)


async def _send_blob(send: Callable[[Message], Awaitable[None]], digest: str, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(body)).encode()),
        (b"docker-distribution-api-version", b"registry/2.0"),
        (b"docker-content-digest", digest.encode()),
        (b"accept-ranges", b"bytes"),
        (b"etag", f'"{digest}"'.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
