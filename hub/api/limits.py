"""Bounds on request bodies, checked before any route sees them: size and JSON nesting depth.

Blob uploads (`PUT /api/v1/blobs/...`) stream to disk and are bounded by `MAX_BLOB_BYTES`
on their announced length (the blob store stops at the announced size). Every other body is
read here up to `MAX_BODY_BYTES`; a JSON body (or one without a content type, which FastAPI
parses as JSON) nested deeper than `MAX_JSON_DEPTH` is refused, since Python's JSON parser
would otherwise hit its recursion limit and the request would fail with a 500. Refusals are
the usual JSON error body: 413 for size, 400 for depth.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from hub.api.errors import error_response
from hub.errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 32 * 1024 * 1024  # a registration of 100,000 files with long paths fits
MAX_BLOB_BYTES = 1 << 40  # 1 TiB: far past any model, short of what a 64-bit length can claim
MAX_JSON_DEPTH = 64
_STREAMED = re.compile(r"^/api/v1/blobs/[^/]+$")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class PayloadTooLarge(BadInput):
    """The request body is larger than the hub accepts."""

    http_status = 413
    code = "payload_too_large"


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when JSON `body` nests arrays/objects deeper than `limit` (strings are skipped)."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


class RequestLimits:
    """ASGI middleware: refuse oversized bodies and over-deep JSON before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        streamed = scope["method"] == "PUT" and bool(_STREAMED.match(scope["path"]))
        limit = MAX_BLOB_BYTES if streamed else MAX_BODY_BYTES
        announced = headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            await self._refuse(scope, send, PayloadTooLarge(
                f"request body of {announced} bytes is over the limit of {limit} bytes"))
            return
        if streamed:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it as usual
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, send, PayloadTooLarge(f"request body is over the limit of {limit} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type", "")
        if (not content_type or "json" in content_type) and json_depth_exceeds(body, MAX_JSON_DEPTH):
            await self._refuse(scope, send, BadInput(f"request body nests deeper than {MAX_JSON_DEPTH} levels"))
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, error: BadInput) -> None:
        response = error_response(Request(scope), error)
        await response(scope, _no_body, send)


def _replay(messages: list[Message], then: Receive) -> Receive:
    """Hand the app what was already read, then the connection's own messages (e.g. its disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
