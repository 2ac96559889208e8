"""Errors the scoring runtime answers with: each carries the HTTP status and gRPC code it maps to."""

from __future__ import annotations

import grpc

# Longest error message sent to a client: messages may quote what the client sent.
MAX_MESSAGE_CHARS = 1000


def one_line(message: str) -> str:
    """`message` cut to MAX_MESSAGE_CHARS (a client's oversized input never comes back whole)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[: MAX_MESSAGE_CHARS - 15] + f"... ({len(message)} chars)"


class ScoringError(Exception):
    """An expected error: its message goes to the client as-is (never a traceback)."""

    status: int = 500
    code: str = "internal"
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class BadRequest(ScoringError):
    """The request is malformed or does not match the model (400)."""

    status = 400
    code = "bad_request"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthorized(ScoringError):
    """Missing or wrong key/token (401)."""

    status = 401
    code = "unauthorized"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class NotFound(ScoringError):
    """Unknown path, model or version (404)."""

    status = 404
    code = "not_found"
    grpc_code = grpc.StatusCode.NOT_FOUND


class MethodNotAllowed(ScoringError):
    """Known path, wrong HTTP method (405)."""

    status = 405
    code = "method_not_allowed"
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class PayloadTooLarge(ScoringError):
    """The body is larger than --max-body-bytes (413)."""

    status = 413
    code = "payload_too_large"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ScoringError):
    """init() has not finished yet (503)."""

    status = 503
    code = "not_ready"
    grpc_code = grpc.StatusCode.UNAVAILABLE


class RunFailed(ScoringError):
    """The model or the entry script's run() raised (500); the server keeps serving."""

    status = 500
    code = "run_failed"
    grpc_code = grpc.StatusCode.INTERNAL


class InitFailed(Exception):
    """The entry script's init() or the model load failed: the process exits non-zero with this message."""
