"""The HTTP front: a tiny router over the DataPlane (v1 /score, V2 REST, documents, metrics, health).

Every handler returns (status, body, content type, extra headers) or a coroutine of it; `handle`
turns that into response bytes, records metrics and maps every error to a JSON body
`{"error": "<message>"}` (never a traceback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import unquote

import orjson

from runtimes.auth import Authenticator
from runtimes.backends.base import V1Request, V1Response
from runtimes.dataplane import DataPlane
from runtimes.errors import BadRequest, MethodNotAllowed, NotFound, ScoringError, one_line
from runtimes.http.protocol import Request, render
from runtimes.metrics import Metrics
from runtimes.v2 import codec
from runtimes.v2.types import InferRequest, InferResponse

log = logging.getLogger("runtimes.http")

Reply = tuple[int, bytes, str, list[tuple[str, str]] | None]
JSON = "application/json"
RUN_TIME_HEADER = "x-ms-run-fn-exec-ms"  # the header Azure ML's server puts the run() time in
MAX_NAME_CHARS = 256  # longest model name or version accepted in a V2 path


def path_param(raw: str, what: str) -> str:
    """A percent-decoded V2 path segment (model name or version); BadRequest when it cannot be one."""
    if len(raw) > 3 * MAX_NAME_CHARS:  # checked before decoding: %XX takes three characters
        raise BadRequest(f"{what} in the path is {len(raw)} characters long; at most {MAX_NAME_CHARS} are accepted")
    try:
        text = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} in the path is not valid percent-encoded UTF-8: {raw[:80]!r}") from None
    if len(text) > MAX_NAME_CHARS:
        raise BadRequest(f"{what} in the path is {len(text)} characters long; at most {MAX_NAME_CHARS} are accepted")
    if not text.isprintable() or "/" in text:
        raise BadRequest(f"{what} in the path holds control characters or '/': {text[:80]!r}")
    return text


def _json(status: int, doc: Any) -> Reply:
    return status, orjson.dumps(doc), JSON, None


class HttpApp:
    """Routes requests to handlers; `handle` is what HttpProtocol calls."""

    def __init__(
        self,
        dataplane: DataPlane,
        auth: Authenticator,
        metrics: Metrics,
        documents: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        self.dp = dataplane
        self.auth = auth
        self.metrics = metrics
        self.documents = documents
        self._docs_cache: tuple[bytes, bytes] | None = None
        self.static: dict[str, tuple[str, Callable[[Request], Reply]]] = {
            "/": ("health", self.health),
            "/v2/health/live": ("health", self.live),
            "/v2/health/ready": ("health", self.ready),
            "/v2": ("metadata", self.server_metadata),
            "/metrics": ("metrics", self.prometheus),
            "/swagger.json": ("docs", self.swagger),
            "/openapi.json": ("docs", self.openapi),
        }

    # entry point ------------------------------------------------------------------------------
    def handle(self, req: Request) -> bytes | Coroutine[Any, Any, bytes]:
        """Answer one request: bytes now, or a coroutine that yields them."""
        started = time.perf_counter()
        endpoint = "other"
        try:
            path = req.path
            if path == "/score":
                endpoint = "score"
                result: Reply | Awaitable[Reply] = self.score(req)
            elif path.startswith("/v2/models/"):
                endpoint, result = self.v2_model(req)
            else:
                route = self.static.get(path.rstrip("/") or "/")
                if route is None:
                    raise NotFound(f"no such endpoint: {req.method} {path:.200}")
                endpoint = route[0]
                if req.method not in ("GET", "HEAD"):
                    raise MethodNotAllowed(f"{path:.200} takes GET, not {req.method}")
                result = route[1](req)
            if isinstance(result, tuple):
                return self._bytes(req, endpoint, started, result)
            return self._finish(req, endpoint, started, result)
        except Exception as exc:
            return self._bytes(req, endpoint, started, self._error(exc))

    async def _finish(self, req: Request, endpoint: str, started: float, pending: Awaitable[Reply]) -> bytes:
        try:
            reply = await pending
        except Exception as exc:
            reply = self._error(exc)
        return self._bytes(req, endpoint, started, reply)

    def _bytes(self, req: Request, endpoint: str, started: float, reply: Reply) -> bytes:
        status, body, ctype, headers = reply
        self.metrics.request(endpoint, status, time.perf_counter() - started)
        return render(status, body, ctype, headers, req.keep_alive, head_only=req.method == "HEAD")

    @staticmethod
    def _error(exc: BaseException) -> Reply:
        if isinstance(exc, ScoringError):
            return _json(exc.status, {"error": one_line(str(exc))})
        log.exception("unexpected error while answering a request")
        return _json(500, {"error": one_line(f"internal error: {type(exc).__name__}: {exc}")})

    # health and documents ---------------------------------------------------------------------
    def health(self, req: Request) -> Reply:
        """`GET /`: Healthy once init() has finished."""
        if self.dp.ready:
            return 200, b"Healthy", "text/plain; charset=utf-8", None
        return 503, b"Initializing", "text/plain; charset=utf-8", None

    def live(self, req: Request) -> Reply:
        """V2 liveness: the process answers."""
        return _json(200, {"live": True})

    def ready(self, req: Request) -> Reply:
        """V2 readiness: init() finished."""
        return _json(200 if self.dp.ready else 503, {"ready": self.dp.ready})

    def server_metadata(self, req: Request) -> Reply:
        """`GET /v2`."""
        return _json(200, self.dp.server_metadata())

    def prometheus(self, req: Request) -> Reply:
        """`GET /metrics`."""
        return 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8", None

    def _docs(self) -> tuple[bytes, bytes]:
        if self._docs_cache is None:
            v2doc, v3doc = self.documents()
            if not self.dp.ready:  # schemas are known only after init(); don't cache a partial document
                return orjson.dumps(v2doc), orjson.dumps(v3doc)
            self._docs_cache = orjson.dumps(v2doc), orjson.dumps(v3doc)
        return self._docs_cache

    def swagger(self, req: Request) -> Reply:
        """`GET /swagger.json` (OpenAPI 2.0)."""
        return 200, self._docs()[0], JSON, None

    def openapi(self, req: Request) -> Reply:
        """`GET /openapi.json` (OpenAPI 3)."""
        return 200, self._docs()[1], JSON, None

    # v1 ----------------------------------------------------------------------------------------
    def score(self, req: Request) -> Reply | Awaitable[Reply]:
        """`/score`: POST for JSON scoring; rawhttp scripts also get other methods."""
        if req.method == "OPTIONS" and not self._rawhttp():
            return 200, b"", "text/plain", [("allow", "POST, OPTIONS")]
        self.auth.check(req.headers.get("authorization"))
        if req.method not in ("POST",) and not self._rawhttp():
            raise MethodNotAllowed(f"/score takes POST, not {req.method}")
        result = self.dp.score(V1Request(req.method, req.path, req.query, req.headers, req.body))
        if isinstance(result, V1Response):
            return _v1_reply(result)
        return self._score_async(result)

    async def _score_async(self, pending: Awaitable[V1Response]) -> Reply:
        return _v1_reply(await pending)

    def _rawhttp(self) -> bool:
        return bool(getattr(self.dp.backend, "rawhttp", False))

    # V2 model routes ---------------------------------------------------------------------------
    def v2_model(self, req: Request) -> tuple[str, Reply | Awaitable[Reply]]:
        """`/v2/models/{m}[/versions/{v}][/ready|/infer]`."""
        parts = req.path[len("/v2/models/") :].rstrip("/").split("/")
        if len(parts) > 4:  # <m>/versions/<v>/<action> at most
            raise NotFound(f"no such endpoint: {req.method} {req.path:.200}")
        name, version, action = parts[0], None, ""
        rest = parts[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = path_param(rest[1], "model version"), rest[2:]
        if len(rest) == 1:
            action = rest[0]
        elif rest:
            raise NotFound(f"no such endpoint: {req.method} {req.path:.200}")
        if not name:
            raise NotFound("model name missing in the path: /v2/models/<model>/...")
        name = path_param(name, "model name")
        if action == "infer":
            if req.method != "POST":
                raise MethodNotAllowed(f"{req.path:.200} takes POST, not {req.method}")
            self.auth.check(req.headers.get("authorization"))
            return "v2_infer", self.infer(req, name, version)
        if req.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{req.path:.200} takes GET, not {req.method}")
        if action == "ready":
            ready = self.dp.model_ready(name, version)
            return "health", _json(200 if ready else 503, {"name": name, "ready": ready})
        if action == "":
            self.auth.check(req.headers.get("authorization"))
            return "metadata", _json(200, self.dp.model_metadata(name, version))
        raise NotFound(f"no such endpoint: {req.method} {req.path:.200}")

    def infer(self, req: Request, name: str, version: str | None) -> Reply | Awaitable[Reply]:
        """`POST .../infer`: decode (JSON or binary extension), run, encode."""
        self.dp.tensor_model(name, version)  # 404 before decoding a large body for an unknown model
        header = req.headers.get("inference-header-content-length")
        header_len: int | None = None
        if header is not None:
            try:
                header_len = int(header)
            except ValueError:
                raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header!r:.40}") from None
        request = codec.decode_request(req.body, header_len, self.dp.config.max_json_objects_bytes)
        result = self.dp.infer(name, version, request)
        if isinstance(result, InferResponse):
            return _v2_reply(result, request)
        return self._infer_async(result, request)

    async def _infer_async(self, pending: Awaitable[InferResponse], request: InferRequest) -> Reply:
        return _v2_reply(await pending, request)


def _v1_reply(resp: V1Response) -> Reply:
    headers = [*resp.headers, (RUN_TIME_HEADER, f"{resp.run_ms:.3f}")]
    return resp.status, resp.body, resp.content_type, headers


def _v2_reply(resp: InferResponse, request: InferRequest) -> Reply:
    body, header_len = codec.encode_response(resp, request)
    if header_len is None:
        return 200, body, JSON, None
    return 200, body, "application/octet-stream", [("inference-header-content-length", str(header_len))]
