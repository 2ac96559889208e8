"""Ed25519 signature verification for the daemon, through the OpenSSL that Python's hashlib already loaded.

The daemon verifies every desired state it receives, so verification is loaded in every agent. The
`cryptography` package would do it too, but importing it costs an idle agent ~6 MiB of its 50 MiB
budget; OpenSSL's libcrypto is already mapped into the process (hashlib links it), so calling its
EVP interface through ctypes costs ~0.3 MiB. Where that libcrypto cannot be found or has no
Ed25519 (OpenSSL < 1.1.1), `cryptography` is used instead: same answers, more memory.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

_NID_ED25519 = 1087  # EVP_PKEY_ED25519
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def _hashlib_libcrypto() -> ctypes.CDLL | None:
    """The libcrypto Python's _hashlib is linked with (found in /proc/self/maps), or None."""
    try:
        import _hashlib  # noqa: F401  # maps libcrypto into the process

        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libcrypto" in line and "/" in line}
    except (ImportError, OSError):
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            lib.EVP_PKEY_new_raw_public_key  # noqa: B018  # OpenSSL >= 1.1.1 only
            lib.EVP_DigestVerify  # noqa: B018
        except (OSError, AttributeError):
            continue
        return lib
    return None


class _OpenSsl:
    """The few EVP calls verification needs, with their C signatures declared."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self.new_key = lib.EVP_PKEY_new_raw_public_key
        self.new_key.argtypes, self.new_key.restype = [ctypes.c_int, vp, cp, sz], vp
        self.free_key = lib.EVP_PKEY_free
        self.free_key.argtypes, self.free_key.restype = [vp], None
        self.new_ctx = lib.EVP_MD_CTX_new
        self.new_ctx.argtypes, self.new_ctx.restype = [], vp
        self.free_ctx = lib.EVP_MD_CTX_free
        self.free_ctx.argtypes, self.free_ctx.restype = [vp], None
        self.init = lib.EVP_DigestVerifyInit
        self.init.argtypes, self.init.restype = [vp, vp, vp, vp, vp], ctypes.c_int
        self.verify = lib.EVP_DigestVerify
        self.verify.argtypes, self.verify.restype = [vp, cp, sz, cp, sz], ctypes.c_int
        self.clear_errors = lib.ERR_clear_error
        self.clear_errors.argtypes, self.clear_errors.restype = [], None


_openssl: _OpenSsl | None = None
_loaded = False
_load_lock = threading.Lock()


def _backend() -> _OpenSsl | None:
    global _openssl, _loaded
    with _load_lock:
        if not _loaded:
            lib = _hashlib_libcrypto()
            _openssl = _OpenSsl(lib) if lib is not None else None
            _loaded = True
        return _openssl


class PublicKey:
    """An Ed25519 public key (raw 32 bytes) that checks signatures: `verify(signature, message) -> bool`."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(raw)}")
        self.raw = bytes(raw)
        self._ssl = _backend()
        self._pkey: int | None = None
        self._fallback: Callable[[bytes, bytes], None] | None = None
        if self._ssl is not None:
            self._pkey = self._ssl.new_key(_NID_ED25519, None, self.raw, len(self.raw))
            if not self._pkey:
                self._ssl.clear_errors()
                raise ValueError("OpenSSL refused the Ed25519 public key")
        else:
            from cryptography.hazmat.primitives.asymmetric import ed25519

            self._fallback = ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature of `message`."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        if self._fallback is not None:
            from cryptography.exceptions import InvalidSignature

            try:
                self._fallback(signature, message)
            except InvalidSignature:
                return False
            return True
        ssl = self._ssl
        assert ssl is not None and self._pkey
        ctx = ssl.new_ctx()
        if not ctx:
            raise MemoryError("OpenSSL could not allocate a digest context")
        try:
            if ssl.init(ctx, None, None, None, self._pkey) != 1:
                ssl.clear_errors()
                return False
            ok = ssl.verify(ctx, signature, len(signature), message, len(message)) == 1
            if not ok:
                ssl.clear_errors()  # a bad signature leaves an error on this thread's OpenSSL queue
            return ok
        finally:
            ssl.free_ctx(ctx)

    def __del__(self) -> None:
        pkey, ssl = getattr(self, "_pkey", None), getattr(self, "_ssl", None)  # __init__ may have stopped early
        if ssl is not None and pkey:
            ssl.free_key(pkey)
            self._pkey = None
