"""One translation of errors into HTTP: `HubError` → `{"error": {"code", "message"}}` with its status.

Under `/v2/` (the OCI distribution API) the body also carries the OCI shape
`{"errors": [{"code", "message"}]}` so stock registry clients understand it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.artifacts import RangeNotSatisfiable, UnknownBlob, UnknownManifest, UnknownRepository
from hub.errors import BadInput, Forbidden, HubError, Unauthorized

log = logging.getLogger("hub.api")

_OCI_CODES: list[tuple[type[HubError], str]] = [
    (UnknownRepository, "NAME_UNKNOWN"),
    (UnknownManifest, "MANIFEST_UNKNOWN"),
    (UnknownBlob, "BLOB_UNKNOWN"),
    (RangeNotSatisfiable, "RANGE_INVALID"),
    (BadInput, "UNSUPPORTED"),
    (Unauthorized, "UNAUTHORIZED"),
    (Forbidden, "DENIED"),
]


def error_response(request: Request, exc: HubError) -> JSONResponse:
    """The JSON error response for a HubError (OCI shape added under /v2/)."""
    body: dict[str, object] = {"error": {"code": exc.code, "message": exc.message}}
    if request.url.path.startswith("/v2/"):
        oci_code = next((code for cls, code in _OCI_CODES if isinstance(exc, cls)), "UNKNOWN")
        body["errors"] = [{"code": oci_code, "message": exc.message, "detail": None}]
    if exc.http_status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return JSONResponse(body, status_code=exc.http_status)


async def _hub_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HubError)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # One line naming the first offending field, e.g. "body.files.0.size: Input should be a valid integer".
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(request, BadInput(f"invalid request: {where}: {first.get('msg', 'bad value')}"))


class RouteError(HubError):
    """No route for this path or method (FastAPI's own 404/405), in the hub's error shape."""

    code = "not_found"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = "not_found" if status == 404 else "bad_input"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no such resource: {request.method} {request.url.path[:200]}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path[:200]}"
    else:
        message = str(exc.detail)
    response = error_response(request, RouteError(message, exc.status_code))
    response.headers.update(exc.headers or {})
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s crashed", request.method, request.url.path)
    return error_response(request, HubError(f"internal error: {type(exc).__name__}: {exc}"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(HubError, _hub_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
