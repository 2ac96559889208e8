"""Key and token auth: what is accepted, and the message for each way it is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from runtimes.auth import Authenticator, mint_token
from runtimes.errors import Unauthorized


def test_none_accepts_anything() -> None:
    Authenticator("none", "svc").check(None)


def test_key_mode_accepts_either_key() -> None:
    auth = Authenticator("key", "svc", keys=["k1", "k2"])
    auth.check("Bearer k1")
    auth.check("bearer k2")
    for header, message in [
        (None, "requires key auth"),
        ("Bearer k3", "invalid key"),
        ("k1", "Bearer"),
        ("Basic k1", "Bearer"),
    ]:
        with pytest.raises(Unauthorized, match=message):
            auth.check(header)


def test_token_format_is_reimplementable() -> None:
    """The hub mints tokens without importing runtimes: this is the documented recipe."""
    secret, now = "s3cret", time.time()
    payload = (
        base64.urlsafe_b64encode(json.dumps({"service": "svc", "exp": int(now) + 60}).encode()).rstrip(b"=").decode()
    )
    sig = (
        base64.urlsafe_b64encode(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    Authenticator("token", "svc", secret=secret).check(f"Bearer {payload}.{sig}")


def test_token_refusals() -> None:
    auth = Authenticator("token", "svc", secret="s")
    auth.check("Bearer " + mint_token("s", "svc", 30))
    cases = [
        (mint_token("s", "svc", -1), "expired"),
        (mint_token("s", "other", 30), "not 'svc'"),
        (mint_token("t", "svc", 30), "signature"),
        ("abc", "signature"),
    ]
    for token, message in cases:
        with pytest.raises(Unauthorized, match=message):
            auth.check(f"Bearer {token}")
    forged_payload = base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode()
    sig = (
        base64.urlsafe_b64encode(hmac.new(b"s", forged_payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    )
    with pytest.raises(Unauthorized, match="malformed"):
        auth.check(f"Bearer {forged_payload}.{sig}")


def test_missing_secrets_are_bad_configuration() -> None:
    with pytest.raises(ValueError, match="EDGEPORT_PRIMARY_KEY"):
        Authenticator("key", "svc", keys=["", ""])
    with pytest.raises(ValueError, match="EDGEPORT_TOKEN_SECRET"):
        Authenticator("token", "svc")
    with pytest.raises(ValueError, match="none, key or token"):
        Authenticator("magic", "svc")
