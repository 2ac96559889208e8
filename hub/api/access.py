"""Access routes: health (open), who am I, API tokens (admin) and the audit log (admin).

Which role each route needs is decided in one place, `hub.api.auth.required_role`;
`document_security` writes the same into the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from hub.access import DEFAULT_TOKEN_TTL_S, ROLES, Principal
from hub.api.auth import READS, required_role
from hub.api.deps import Services
from hub.errors import Unauthorized
from hub.names import parse_duration, validate_fleet_name

router = APIRouter(prefix="/api/v1", tags=["access"])

MAX_AUDIT = 10_000
MAX_SINCE_S = 10 * 365 * 86400
TokenName = Annotated[str, Path(max_length=63, description="the token's name")]


class TokenRequest(BaseModel):
    """Body of `POST /api/v1/tokens`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=63, description="1-63 of A-Z a-z 0-9 . _ -; never reused")
    role: str = Field(description=f"one of {', '.join(ROLES)}")
    expires: str = Field(
        default=f"{DEFAULT_TOKEN_TTL_S // 86400}d", max_length=32, description="lifetime, e.g. 12h, 30d, 365d"
    )


@router.get("/health", summary="Is the hub up? (no token needed)")
def health() -> dict[str, str]:
    """`{"status": "ok"}` while the hub serves."""
    return {"status": "ok"}


@router.get(
    "/ca",
    summary="The hub CA certificate, PEM (no token needed)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/x-pem-file": {}}}},
)
def ca_certificate(services: Services) -> PlainTextResponse:
    """What clients of an https hub check it against: agents and `hub login` accept it only when its sha256
    is the fingerprint they were given (in the enrollment token, or confirmed by the user)."""
    ca_pem: bytes = services.fleet.ca.ca_pem
    return PlainTextResponse(ca_pem.decode("ascii"), media_type="application/x-pem-file")


@router.post("/signing-key/rotate", summary="Replace the key that signs desired state (admin)")
def rotate_signing_key(services: Services) -> dict[str, Any]:
    """A new Ed25519 key, certified by the hub CA, signs from now on; every device gets its desired state
    again at a new revision signed by it, and once an agent has taken it up it refuses the old key."""
    key_id = services.fleet.signer.rotate()
    services.deployments.refresh()
    return {"key_id": key_id, "devices": services.fleet.enrolled_count()}


@router.get("/whoami", summary="The calling token's name and role")
def whoami(request: Request) -> dict[str, Any]:
    """What `hub login` checks before it stores a token."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    if principal is None:  # cannot happen behind the gate; said plainly if it ever does
        raise Unauthorized("no token")
    return {"name": principal.name, "role": principal.role}


@router.post("/tokens", status_code=201, summary="Create an API token (shown once)")
def create_token(body: TokenRequest, services: Services) -> dict[str, Any]:
    """`{"name", "role", "token", "expires"}`: keep the token, the hub stores only its hash."""
    return services.access.create_token(body.name, body.role, parse_duration(body.expires))


@router.get("/tokens", summary="API tokens: name, role, state, created, expires (never the token)")
def list_tokens(services: Services) -> list[dict[str, Any]]:
    """Every token, oldest first; revoked and expired ones too."""
    return services.access.list_tokens()


@router.delete("/tokens/{name}", summary="Revoke an API token: refused from the next request on")
def revoke_token(name: TokenName, services: Services) -> dict[str, Any]:
    """The token's entry, now revoked."""
    return services.access.revoke_token(validate_fleet_name("token", name))


@router.get("/audit", summary="The audit log, newest first: every change and every refusal")
def audit(
    services: Services,
    since: Annotated[float | None, Query(gt=0, le=MAX_SINCE_S, description="seconds back from now")] = None,
    who: Annotated[str | None, Query(max_length=255, description="a token name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT)] = 1000,
) -> list[dict[str, Any]]:
    """Records `{at, who, source, action, status, result}`."""
    return services.access.audit(since, who, limit)


def document_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the token schemes and each operation's role (`x-required-role`; open ones get `security: []`)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "token": {"type": "http", "scheme": "bearer", "description": "a hub API token (ept_...)"},
            "registryToken": {"type": "http", "scheme": "basic", "description": "any user name, token as password"},
        }
    )
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            role = required_role(method.upper(), path)
            if role is None:
                operation["security"] = []
                operation["x-required-role"] = "none"
                continue
            operation["security"] = [{"token": []}, {"registryToken": []}]
            operation["x-required-role"] = role
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {"description": "no token, or a token that is unknown, expired or revoked"})
            if method.upper() not in READS or role != "viewer":
                responses.setdefault("403", {"description": f"the token's role is below {role}"})
    return schema
