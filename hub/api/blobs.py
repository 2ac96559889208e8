"""Blobs: `HEAD /api/v1/blobs/{digest}` (is it stored?), `PUT /api/v1/blobs/{digest}` (stream it in),
`POST /api/v1/blobs/gc` (collect unreferenced blobs now)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from hub.api.deps import Services
from hub.api.limits import MAX_BLOB_BYTES, PayloadTooLarge
from hub.blobs import validate_digest
from hub.errors import BadInput

router = APIRouter(prefix="/api/v1/blobs", tags=["blobs"])


class CollectRequest(BaseModel):
    """Body of `POST /api/v1/blobs/gc` (optional)."""

    model_config = ConfigDict(extra="forbid")
    grace_s: float | None = Field(
        default=None, ge=0, le=10 * 365 * 86400,
        description="spare blobs written or used less than this many seconds ago (default: the hub's --blob-grace)",
    )


@router.post("/gc", summary="Collect unreferenced blobs now; says how many and how many bytes were reclaimed")
async def collect_blobs(services: Services, body: CollectRequest | None = None) -> dict[str, Any]:
    """Mark and sweep once: blobs no model version or live service generation references, older than the grace."""
    grace = body.grace_s if body is not None else None
    report = await run_in_threadpool(services.blob_collector.collect, grace)
    return report.to_json()


@router.head("/{digest}", summary="Is a blob stored intact? 200 yes, 404 no")
def blob_exists(digest: str, services: Services) -> Response:
    """200 with Content-Length when the blob is stored intact; 404 when absent or corrupt (so clients re-upload it)."""
    validate_digest(digest)
    # A client that finds the blob will not upload it: claim it so collection spares it meanwhile.
    if not services.blobs.claim(digest) or not services.blobs.is_intact(digest):
        return Response(status_code=404)
    return Response(status_code=200, headers={"Content-Length": str(services.blobs.size(digest))})


@router.put("/{digest}", status_code=201, summary="Upload a blob (raw bytes as the body, streamed)")
async def put_blob(digest: str, request: Request, services: Services) -> dict[str, object]:
    """Stream the body to a temp file, verify digest and size, fsync and rename into the store.

    400 when the content does not match `digest`; 507 when the disk is full (nothing left behind).
    """
    validate_digest(digest)
    announced = request.headers.get("content-length")
    expected = int(announced) if announced and announced.isdigit() else None
    if services.blobs.claim(digest) and await run_in_threadpool(services.blobs.is_intact, digest):
        # Content-addressed: stored intact means identical, no need to read the body.
        # A corrupt copy falls through and is replaced atomically by the upload (self-repair).
        return {"digest": digest, "size": services.blobs.size(digest), "created": False}
    writer = services.blobs.writer(digest, expected)
    try:
        async for chunk in request.stream():
            if chunk:
                writer.write(chunk)  # page-cache writes are quick; fsync happens in commit, off the loop
                if writer.size > MAX_BLOB_BYTES:  # a chunked body announces no length: stop it here
                    raise PayloadTooLarge(f"blob {digest}: body is over the limit of {MAX_BLOB_BYTES} bytes")
    except ClientDisconnect:
        writer.abort()
        raise BadInput(f"upload of blob {digest} was interrupted by the client; nothing was stored") from None
    except BaseException:  # HubError (disk full, oversize) or anything else: leave no temp file behind
        writer.abort()
        raise
    size = await run_in_threadpool(writer.commit)
    return {"digest": digest, "size": size, "created": True}
