"""One gate in front of every route: who is calling, may their role make this call, and the audit record.

`AccessControl` is an ASGI middleware rather than a per-route dependency so that nothing answers
before it: not the body-size limits, not the small-blob fast path, not a route's body validation
(an unauthenticated caller learns nothing from a 400). It finds the route a request is for, looks
up the role that route needs in `required_role` (one table, failing closed: a route it does not
know needs a token), checks the credentials, and writes the audit record of every call that
changes state and of every refusal before the caller hears the answer.

Credentials: `Authorization: Bearer TOKEN`, or HTTP Basic with any user name and the token as the
password (how OCI clients such as oras and docker send a registry's access token). Device pull
tokens are accepted only for GET/HEAD under /v2/.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute, Match

from hub.access import AccessService, Principal
from hub.api.errors import error_response
from hub.errors import Forbidden, HubError, Unauthorized

log = logging.getLogger("hub.audit")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READS = frozenset({"GET", "HEAD", "OPTIONS"})
TEMPLATE_CACHE = 4096  # paths whose route template is remembered
REALM = 'realm="edgeport hub"'

# Routes anyone may call. Dashboard page shells and their static files carry no data (the data comes
# from fragments, which need a token); health; enrollment (it proves a one-time token itself); the
# API's own description.
OPEN_ROUTES = frozenset(
    {
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/ca"),
        ("POST", "/api/v1/enroll"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("GET", "/"),
        ("GET", "/ui/login"),
        ("GET", "/ui/devices/{name}"),
        ("GET", "/ui/services"),
        ("GET", "/ui/services/{name}"),
        ("GET", "/ui/registry"),
        ("GET", "/ui/static/{filename}"),
    }
)
ADMIN_PREFIXES = ("/api/v1/tokens", "/api/v1/audit", "/api/v1/signing-key")  # every method
ADMIN_CHANGES = ("/api/v1/devices", "/api/v1/blobs/gc")  # changes only: reading devices is for viewers
SECRET_READS = frozenset({("GET", "/api/v1/services/{name}/keys")})  # scoring keys: deployers and admins


def required_role(method: str, template: str | None) -> str | None:
    """The least role a call needs (viewer, deployer, admin), or None for an open route.

    `template` is the route's path template (None when no route matches: a token is still
    needed, so an anonymous caller cannot map the API by its 404s).
    """
    if template is None:
        return "viewer"
    if (method, template) in OPEN_ROUTES:
        return None
    if template.startswith(ADMIN_PREFIXES):
        return "admin"
    if method in READS:
        return "deployer" if (method, template) in SECRET_READS else "viewer"
    return "admin" if template.startswith(ADMIN_CHANGES) else "deployer"


def bearer_or_basic(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The token in `Authorization` (Bearer, or Basic with the token as password); None when there is none."""
    raw = next((v for k, v in headers if k == b"authorization"), None)
    if raw is None:
        return None
    scheme, _, value = raw.decode("latin-1").strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2] or ""
    return ""  # some other scheme: a credential we cannot use


class AccessControl:
    """ASGI middleware: authenticate, authorize by route, audit."""

    def __init__(self, app: ASGIApp, access: AccessService, routes: list[BaseRoute]) -> None:
        self.app = app
        self.access = access
        self.routes = routes  # every route with its full path, in the order the app tries them
        # (method, path) -> route template: a fleet pulls the same few paths again and again, and matching
        # every route's pattern is most of what the check costs. Bounded: past it, it starts over.
        self._templates: dict[tuple[str, str], str | None] = {}
        self.audit = AuditBatches(access)

    def _template(self, scope: Scope) -> str | None:
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", ""))
            if match is Match.PARTIAL and partial is None:
                partial = str(getattr(route, "path", ""))
        return partial  # path known, method not: the 405 needs the path's role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        key = (method, scope["path"])
        try:
            template = self._templates[key]
        except KeyError:
            template = self._template(scope)
            if len(self._templates) >= TEMPLATE_CACHE:
                self._templates.clear()
            self._templates[key] = template
        needed = required_role(method, template)
        principal: Principal | None = None
        if needed is not None:
            try:
                principal = self._check(scope, method, needed, template)
            except _Refused as refused:
                await self._refuse(scope, send, refused.error, refused.who)
                return
        scope.setdefault("state", {})["principal"] = principal
        if method in READS:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Audited(self, scope, principal, send))

    def _check(self, scope: Scope, method: str, needed: str, template: str | None) -> Principal:
        what = f"{method} {(template or scope['path'][:200]).replace(':path}', '}')}"
        token = bearer_or_basic(scope["headers"])
        if token is None:
            raise _Refused(Unauthorized(f"{what} needs a hub API token with role {needed} or above: "
                                        "send Authorization: Bearer TOKEN"))
        if not token:
            raise _Refused(Unauthorized("the Authorization header holds no usable token (use Bearer TOKEN, "
                                        "or Basic with the token as the password)"))
        try:
            principal = self.access.authenticate(token)
        except HubError as exc:
            raise _Refused(exc, "unknown token") from None
        if principal.is_device:
            if method in ("GET", "HEAD") and scope["path"].startswith("/v2/"):
                return principal
            raise _Refused(Forbidden(f"a device pull token only pulls from /v2/; {what} needs role {needed}"),
                           principal.name)
        if not principal.allows(needed):
            raise _Refused(Forbidden(f"token {principal.name!r} has role {principal.role}; {what} needs role {needed}"),
                           principal.name)
        return principal

    async def _refuse(self, scope: Scope, send: Send, exc: HubError, who: str) -> None:
        response = error_response(Request(scope), exc)
        if exc.http_status == 401:
            scheme = "Basic" if scope["path"].startswith("/v2") else "Bearer"
            response.headers["WWW-Authenticate"] = f"{scheme} {REALM}"
        await self.write(scope, who, exc.http_status, f"refused: {exc.message}")

        async def receive() -> Message:  # the refusal never reads the body
            return {"type": "http.disconnect"}

        await response(scope, receive, send)

    async def write(self, scope: Scope, who: str, status: int, result: str) -> None:
        """Store one audit record; return once it is committed."""
        client = scope.get("client")
        source = client[0] if client else "-"
        action = f"{scope['method']} {scope['path'][:300]}"
        await self.audit.write((time.time(), who, source, action, status, result[:500]))


class AuditBatches:
    """Audit records written in one transaction per batch (group commit), off the event loop.

    A call's record is committed before its answer leaves, but calls that arrive while a batch is being
    written share the next commit instead of paying one each: that commit, not the check, is what a
    change costs on top of the call. A batch that cannot be stored (a full disk) is logged instead: the
    calls already happened, and failing their answers would not undo them.
    """

    def __init__(self, access: AccessService) -> None:
        self.access = access
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rows: list[tuple[float, str, str, str, int, str]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._writing = False
        self._task: asyncio.Task[None] | None = None

    async def write(self, row: tuple[float, str, str, str, int, str]) -> None:
        """Queue `row` and wait until the batch holding it is committed (or given up on)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (in-process test clients): start afresh
            self._loop, self._rows, self._waiters, self._writing = loop, [], [], False
        done: asyncio.Future[None] = loop.create_future()
        self._rows.append(row)
        self._waiters.append(done)
        if not self._writing:
            self._writing = True
            self._task = loop.create_task(self._write_batches())
        await done

    async def _write_batches(self) -> None:
        try:
            while self._rows:
                rows, waiters = self._rows, self._waiters
                self._rows, self._waiters = [], []
                try:
                    await asyncio.to_thread(self.access.record, rows)
                except Exception as exc:  # a full disk above all; whatever it is, the calls must get their answers
                    log.error("%d audit record(s) not stored (%s): %s", len(rows), exc, rows)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self._writing = False


class _Refused(Exception):
    """A refusal and who was refused (a token's name when the token itself was good)."""

    def __init__(self, error: HubError, who: str = "-") -> None:
        super().__init__(error.message)
        self.error = error
        self.who = who


class _Audited:
    """A `send` that writes the call's audit record before the answer leaves (with the error's message)."""

    def __init__(self, gate: AccessControl, scope: Scope, principal: Principal | None, send: Send) -> None:
        self.gate = gate
        self.scope = scope
        self.who = principal.name if principal is not None else "-"
        self.send = send
        self.start: Message | None = None
        self.done = False

    async def __call__(self, message: Message) -> None:
        if self.done:
            await self.send(message)
            return
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                self.done = True
                await self.gate.write(self.scope, self.who, message["status"], "ok")
                await self.send(message)
                return
            self.start = message  # an error: hold it until the body says why
            return
        if message["type"] == "http.response.body" and self.start is not None:
            self.done = True
            status = self.start["status"]
            await self.gate.write(self.scope, self.who, status, _error_message(message.get("body", b""), status))
            await self.send(self.start)
            await self.send(message)
            return
        await self.send(message)


def _error_message(body: bytes, status: int) -> str:
    try:
        return f"error: {json.loads(body)['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"error: HTTP {status}"
