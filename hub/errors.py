"""The hub's expected errors, each mapped once to an HTTP status and a CLI exit code.

Services raise these; only the fronts (REST, gRPC, MQTT, CLI) translate them, so no service
formats an HTTP response or picks an exit code.
"""

from __future__ import annotations


class HubError(Exception):
    """Base: an expected failure with a one-line message for users."""

    http_status = 500
    exit_code = 1
    code = "failure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(HubError):
    """The request itself is wrong (syntax, names, paths, files): exit 2, HTTP 400."""

    http_status = 400
    exit_code = 2
    code = "bad_input"


class NotFound(HubError):
    """A named thing does not exist: exit 2, HTTP 404."""

    http_status = 404
    exit_code = 2
    code = "not_found"


class Conflict(HubError):
    """The request clashes with current state (in use, already exists): exit 2, HTTP 409."""

    http_status = 409
    exit_code = 2
    code = "conflict"


class Unauthorized(HubError):
    """Credentials missing, expired, reused or revoked: exit 2, HTTP 401."""

    http_status = 401
    exit_code = 2
    code = "unauthorized"


class Forbidden(HubError):
    """The credentials are valid but their role does not allow the call: exit 2, HTTP 403."""

    http_status = 403
    exit_code = 2
    code = "forbidden"


class StorageError(HubError):
    """Stored data is damaged or the disk failed (corrupt blob, disk full): exit 1, HTTP 500/507."""

    http_status = 500
    exit_code = 1
    code = "storage_error"


class InsufficientStorage(StorageError):
    """The disk is full: nothing was half-written: HTTP 507."""

    http_status = 507
    code = "insufficient_storage"


ERRORS_BY_CODE: dict[str, type[HubError]] = {
    cls.code: cls for cls in (
        HubError, BadInput, NotFound, Conflict, Unauthorized, Forbidden, StorageError, InsufficientStorage
    )
}
