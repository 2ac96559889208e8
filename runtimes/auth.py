"""Key and token auth for scoring endpoints (health, metrics and API documents stay open).

Keys: `Authorization: Bearer <key>`, where key is EDGEPORT_PRIMARY_KEY or EDGEPORT_SECONDARY_KEY
(both accepted, so keys can be rotated one at a time).

Tokens: `Authorization: Bearer <payload>.<signature>` where
  payload   = base64url(JSON {"service": "<service name>", "exp": <unix seconds>}), no padding
  signature = base64url(HMAC-SHA256(key=EDGEPORT_TOKEN_SECRET (utf-8), msg=payload (ascii))), no padding
A token is accepted while `exp` is in the future and `service` is this service's --name. The hub
mints tokens with the same ~5 lines (it does not import this module); `python -m runtimes token`
mints one for tests and operators.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from runtimes.errors import Unauthorized


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: str, service: str, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """A token for `service` valid for `ttl_s` seconds."""
    payload = _b64(
        json.dumps({"service": service, "exp": int((now or time.time()) + ttl_s)}, separators=(",", ":")).encode()
    )
    sig = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}"


class Authenticator:
    """Checks the Authorization header; mode is none, key or token."""

    def __init__(self, mode: str, service: str, keys: list[str] | None = None, secret: str | None = None) -> None:
        """Keys/secret come from the environment (never argv); ValueError when the mode lacks them."""
        self.mode = mode
        self.service = service
        self.keys = [k.encode() for k in keys or [] if k]
        self.secret = secret.encode() if secret else b""
        if mode == "key" and not self.keys:
            raise ValueError(
                "--auth key needs EDGEPORT_PRIMARY_KEY (and optionally EDGEPORT_SECONDARY_KEY) in the environment"
            )
        if mode == "token" and not self.secret:
            raise ValueError("--auth token needs EDGEPORT_TOKEN_SECRET in the environment")
        if mode not in ("none", "key", "token"):
            raise ValueError(f"--auth must be none, key or token, got {mode!r}")

    @property
    def enabled(self) -> bool:
        """False when --auth none."""
        return self.mode != "none"

    def check(self, authorization: str | None) -> None:
        """Raise Unauthorized with a message saying what is wrong."""
        if self.mode == "none":
            return
        if not authorization:
            raise Unauthorized(f"this service requires {self.mode} auth: send 'Authorization: Bearer <{self.mode}>'")
        scheme, _, cred = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not cred:
            raise Unauthorized("Authorization header must be 'Bearer <credential>'")
        cred = cred.strip()
        if self.mode == "key":
            given = cred.encode()
            if not any(hmac.compare_digest(given, k) for k in self.keys):
                raise Unauthorized("invalid key")
            return
        self._check_token(cred)

    def _check_token(self, token: str) -> None:
        payload, _, sig = token.partition(".")
        want = _b64(hmac.new(self.secret, payload.encode(), hashlib.sha256).digest())
        if not sig or not hmac.compare_digest(sig.encode(), want.encode()):
            raise Unauthorized("invalid token signature")
        try:
            claims = json.loads(_unb64(payload))
            exp = float(claims["exp"])
            service = claims.get("service")
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("malformed token") from None
        if exp <= time.time():
            raise Unauthorized("token expired")
        if service != self.service:
            raise Unauthorized(f"token is for service {service!r}, not {self.service!r}")
