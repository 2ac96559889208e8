"""`HubClient`: the HTTP client the CLI and the SDK share (httpx, streaming, errors mapped back to HubError).

Uploads stream from files in chunks and skip blobs the hub already has (HEAD);
downloads stream into a temp file next to the target, are verified against the
digest and then renamed, so a failed download never leaves a half file under the
real name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from hub.credentials import logged_in_hub, pinned_ca, resolve_token
from hub.errors import ERRORS_BY_CODE, BadInput, HubError, StorageError, Unauthorized
from hub.names import validate_name

DEFAULT_HUB = "http://127.0.0.1:7070"
CHUNK = 1024 * 1024

# Called as progress(label, done_bytes, total_bytes) while a file moves.
Progress = Callable[[str, int, int], None]


class HubUnreachable(HubError):
    """No hub answers at the URL (connection refused, DNS, timeout)."""


@dataclass(frozen=True)
class LocalFile:
    """A file about to be registered: where it is, its path inside the model, digest and size."""

    source: Path
    path: str
    digest: str
    size: int


def default_hub_url() -> str:
    """`EDGEPORT_HUB`, else the hub `hub login` stored last, else http://127.0.0.1:7070."""
    return os.environ.get("EDGEPORT_HUB") or logged_in_hub() or DEFAULT_HUB


def collect_files(model_path: Path) -> list[LocalFile]:
    """The files to register from a file or a folder (relative paths inside it), hashed.

    BadInput for a missing path, an empty folder, a file that cannot be read, or
    something that is not a regular file.
    """
    model_path = Path(model_path)
    if not model_path.exists() and not model_path.is_symlink():
        raise BadInput(f"model path {model_path} does not exist")
    if model_path.is_dir():
        entries: list[tuple[Path, str]] = []
        seen_dirs: set[str] = set()
        # Follow symlinked folders (their files are part of the model) but refuse loops.
        for root, dirs, names in os.walk(model_path, followlinks=True):
            real = os.path.realpath(root)
            if real in seen_dirs:
                raise BadInput(f"cannot register {model_path}: folder {root} links back into the model (a loop)")
            seen_dirs.add(real)
            dirs.sort()
            for name in sorted(names):
                full = Path(root) / name
                entries.append((full, full.relative_to(model_path).as_posix()))
        if not entries:
            raise BadInput(f"model folder {model_path} contains no files")
    else:
        entries = [(model_path, model_path.name)]
    return [_hash_local(source, rel) for source, rel in entries]


def _hash_local(source: Path, rel: str) -> LocalFile:
    try:
        st = source.stat()
    except FileNotFoundError:
        raise BadInput(f"cannot read {source}: broken symbolic link") from None
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {(exc.strerror or str(exc)).lower()}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"cannot register {source}: not a regular file")
    h = hashlib.sha256()
    size = 0
    try:
        with open(source, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {(exc.strerror or str(exc)).lower()}") from None
    return LocalFile(source, rel, "sha256:" + h.hexdigest(), size)


def safe_target(target_dir: Path, rel: str) -> Path:
    """Where file `rel` of a model goes under `target_dir`; refuses paths that would escape it."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"hub sent an unsafe file path {rel!r}; refusing to write it")
    return target_dir.joinpath(*parts)


class HubClient:
    """Talks to one hub's REST and OCI APIs; raises the same HubError classes the hub raised."""

    def __init__(
        self, url: str | None = None, *, token: str | None = None, timeout: float = 60.0, ca_pem: str | None = None
    ) -> None:
        """`token`: the API token to send; None takes `--token`, `$EDGEPORT_TOKEN` or `hub login`'s (see
        `hub.credentials`). `ca_pem`: the hub CA an https hub's certificate may chain to; None takes the one
        `hub login` pinned for this hub (the system's CAs are trusted too, for a hub with a public certificate)."""
        self.url = (url or default_hub_url()).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise BadInput(f"bad hub URL {self.url!r}: expected http://HOST:PORT")
        self.token = token or resolve_token(self.url)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        verify: ssl.SSLContext | bool = True
        ca = ca_pem or (pinned_ca(self.url) if self.url.startswith("https://") else None)
        if ca:
            verify = ssl.create_default_context()
            try:
                verify.load_verify_locations(cadata=ca)
            except (ssl.SSLError, ValueError) as exc:
                raise BadInput(f"the hub CA pinned for {self.url} is not a PEM certificate ({exc}); "
                               "run 'hub login' again") from None  # fmt: skip
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), verify=verify
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport -------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; map connection failures and error bodies to HubError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._raise_for_error(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Like `request` but the body is read by the caller in chunks."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for_error(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _raise_for_error(self, response: httpx.Response) -> None:
        try:
            _raise_for_error(response)
        except Unauthorized as exc:
            if self.token:
                raise
            raise Unauthorized(
                f"{exc.message}. No token was given: pass --token, set $EDGEPORT_TOKEN, "
                f"or run 'hub login --hub {self.url} --token TOKEN'"
            ) from None

    def _unreachable(self, exc: httpx.TransportError) -> HubError:
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return HubUnreachable(
                f"the hub at {self.url} presented a certificate this machine does not trust; pin the hub's CA "
                f"with 'hub login --hub {self.url} --token TOKEN' (it shows the CA's fingerprint to confirm)"
            )
        if isinstance(exc, httpx.ConnectError):
            return HubUnreachable(f"cannot reach the hub at {self.url} (is 'hub serve' running?)")
        return HubUnreachable(f"lost the connection to the hub at {self.url}: {type(exc).__name__} {exc}")

    # --- blobs -----------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        """True when the hub already stores this blob."""
        try:
            response = self._http.head(f"/api/v1/blobs/{digest}")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code == 404:
            return False
        self._raise_for_error(response)
        return True

    def upload_blob(self, source: Path, digest: str, size: int, progress: Progress | None = None) -> bool:
        """Upload a file unless the hub has it; True when bytes were sent. Streams in chunks."""
        if self.has_blob(digest):
            if progress:
                progress(source.name, size, size)
            return False

        def chunks() -> Iterator[bytes]:
            done = 0
            with open(source, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    done += len(chunk)
                    yield chunk
                    if progress:
                        progress(source.name, done, size)

        try:
            self.request(
                "PUT",
                f"/api/v1/blobs/{digest}",
                content=chunks(),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
        except OSError as exc:  # the file vanished or became unreadable after it was hashed
            raise BadInput(f"cannot read {source}: {(exc.strerror or str(exc)).lower()}") from None
        return True

    # --- models ----------------------------------------------------------------------------------
    def register_model(
        self,
        name: str,
        model_path: Path,
        *,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str = "",
        framework: str = "",
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Hash and upload the files (skipping stored ones), then create the next version."""
        validate_name(name)  # fail before hashing gigabytes
        files = collect_files(Path(model_path))
        for f in files:
            self.upload_blob(f.source, f.digest, f.size, progress)
        body = {
            "name": name,
            "files": [{"path": f.path, "digest": f.digest, "size": f.size} for f in files],
            "tags": tags or {},
            "properties": properties or {},
            "description": description,
            "framework": framework,
        }
        return self.request("POST", "/api/v1/models", json=body).json()

    def list_models(
        self, name: str | None = None, tags: list[str] | None = None, latest: bool = False
    ) -> list[dict[str, Any]]:
        """Model versions, optionally filtered (tags as KEY=VALUE or KEY)."""
        params: list[tuple[str, str]] = []
        if name:
            params.append(("name", name))
        params += [("tag", t) for t in tags or []]
        if latest:
            params.append(("latest", "true"))
        return self.request("GET", "/api/v1/models", params=params).json()

    def get_model(self, name: str, version: int | None = None) -> dict[str, Any]:
        """One version (latest when `version` is None)."""
        path = f"/api/v1/models/{name}" if version is None else f"/api/v1/models/{name}/versions/{version}"
        return self.request("GET", path).json()

    def delete_model(self, name: str, version: int) -> dict[str, Any]:
        """Delete one version; returns what was deleted."""
        return self.request("DELETE", f"/api/v1/models/{name}/versions/{version}").json()

    def download_model(
        self,
        name: str,
        version: int | None,
        target_dir: Path,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> tuple[dict[str, Any], list[Path]]:
        """Download every file of a version into `target_dir`, keeping relative paths; verified by digest."""
        target_dir = Path(target_dir)
        if target_dir.exists() and not target_dir.is_dir():
            raise BadInput(f"target {target_dir} is a file, not a folder")
        model = self.get_model(name, version)
        plan = [(f, safe_target(target_dir, f["path"])) for f in model["files"]]
        for f, dest in plan:  # check everything before writing anything
            for parent in [dest, *dest.parents]:
                if parent == target_dir:
                    break
                if parent != dest and parent.exists() and not parent.is_dir():
                    raise BadInput(f"cannot write {dest}: {parent} is a file")
            if dest.exists() and not overwrite and (dest.is_dir() or _digest_of(dest) != f["digest"]):
                raise BadInput(f"{dest} already exists and differs (use --overwrite to replace it)")
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"cannot create target folder {target_dir}: {exc.strerror}") from None
        written: list[Path] = []
        for f, dest in plan:
            try:
                if not (dest.is_file() and _digest_of(dest) == f["digest"]):
                    self._download_blob(model["repository"], f["digest"], f["size"], dest, progress)
            except OSError as exc:  # local side: permissions, disk full (network errors are HubErrors already)
                cls = StorageError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else BadInput
                raise cls(f"cannot write {dest}: {(exc.strerror or str(exc)).lower()}") from None
            written.append(dest)
        return model, written

    def _download_blob(self, repository: str, digest: str, size: int, dest: Path, progress: Progress | None) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        h = hashlib.sha256()
        done = 0
        try:
            with os.fdopen(fd, "wb") as out, self.stream("GET", f"/v2/{repository}/blobs/{digest}") as response:
                for chunk in response.iter_bytes(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(dest.name, done, size)
            actual = "sha256:" + h.hexdigest()
            if actual != digest:
                raise StorageError(f"download of {dest.name} was corrupted in transit ({actual} != {digest})")
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error") or {}
        cls = ERRORS_BY_CODE.get(error.get("code", ""), HubError)
        message = error.get("message") or response.reason_phrase
    except (ValueError, AttributeError):  # no JSON body (a HEAD): the status says enough
        by_status = {401: "unauthorized", 403: "forbidden"}
        cls = ERRORS_BY_CODE.get(by_status.get(response.status_code, ""), HubError)
        message = f"hub answered {response.status_code} {response.reason_phrase} to {response.request.method} " + (
            response.request.url.path
        )
    if response.status_code == 404 and cls is HubError:
        cls = ERRORS_BY_CODE["not_found"]
    raise cls(message)
