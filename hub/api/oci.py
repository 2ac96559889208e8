"""OCI distribution API, pull side: `/v2/`, manifests and blobs (with single HTTP Range)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from hub.api.deps import Services
from hub.api.errors import error_response
from hub.artifacts import RangeNotSatisfiable, parse_range

router = APIRouter(prefix="/v2", tags=["oci"])

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
SMALL_BLOB = 1024 * 1024  # served from memory in one piece; larger blobs stream


@router.get("/", summary="OCI API version check")
def api_base() -> Response:
    """200 `{}`: this hub speaks the distribution API (pull only, no auth)."""
    return Response(content=b"{}", media_type="application/json", headers=API_VERSION)


@router.get("/{name:path}/tags/list", summary="List a repository's tags (model version numbers)")
def list_tags(name: str, services: Services) -> Response:
    """`{"name": ..., "tags": [...]}` per the distribution spec (no pagination: a model has few versions)."""
    body = json.dumps({"name": name, "tags": services.artifacts.tags(name)}).encode()
    return Response(content=body, media_type="application/json", headers=API_VERSION)


@router.get("/{name:path}/manifests/{reference}", operation_id="get_manifest", summary="Pull a manifest")
@router.head("/{name:path}/manifests/{reference}", operation_id="head_manifest", summary="Check a manifest")
def get_manifest(name: str, reference: str, request: Request, services: Services) -> Response:
    """The manifest of repository `name` at a tag (version number) or `sha256:` digest."""
    body, digest, media_type = services.artifacts.manifest(name, reference)
    headers = {**API_VERSION, "Docker-Content-Digest": digest, "Content-Length": str(len(body))}
    if request.method == "HEAD":
        return Response(status_code=200, media_type=media_type, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)


@router.get("/{name:path}/blobs/{digest}", operation_id="get_blob", summary="Pull a blob (Range supported)")
@router.head("/{name:path}/blobs/{digest}", operation_id="head_blob", summary="Check a blob")
def get_blob(name: str, digest: str, request: Request, services: Services) -> Response:
    """The verified blob; a single `Range: bytes=a-b` gives 206 with Content-Range, 416 when unsatisfiable."""
    size = services.artifacts.blob_size(name, digest)
    headers = {**API_VERSION, "Docker-Content-Digest": digest, "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}
    range_header = request.headers.get("range")
    byte_range = None
    status = 200
    if range_header:
        try:
            byte_range = parse_range(range_header, size)
        except RangeNotSatisfiable as exc:
            # 416 says how big the blob is so the client can retry sensibly.
            response = error_response(request, exc)
            response.headers.update({**headers, "Content-Range": f"bytes */{size}"})
            return response
        status = 206
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    length = byte_range.length if byte_range else size
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, media_type="application/octet-stream", headers=headers)
    if length <= SMALL_BLOB:  # models are often a few KB: one read, no per-chunk hops to the thread pool
        body = b"".join(services.artifacts.blob_chunks(digest, byte_range))
        return Response(content=body, status_code=status, media_type="application/octet-stream", headers=headers)
    return StreamingResponse(
        services.artifacts.blob_chunks(digest, byte_range),
        status_code=status,
        media_type="application/octet-stream",
        headers=headers,
    )
