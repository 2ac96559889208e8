"""`create_app(services)`: the hub's FastAPI app (REST admin API under /api/v1, OCI pull API under /v2)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from fastapi import FastAPI

from hub.api import access, blobs, dashboard, devices, enroll, metrics, models, oci, services, telemetry
from hub.api.auth import AccessControl
from hub.api.blob_fastpath import BlobFastPath
from hub.api.errors import install_error_handlers
from hub.api.limits import RequestLimits
from hub.services import HubServices
from hub.version import VERSION

# Each module exposes `router`; the API is these, in this order.
ROUTER_MODULES: tuple[ModuleType, ...] = (
    access, blobs, models, oci, devices, enroll, services, telemetry, metrics, dashboard
)


def create_app(services: HubServices) -> FastAPI:
    """Build the app around `services`; every route reaches them through `hub.api.deps.Services`."""
    app = FastAPI(
        title="Edgeport hub",
        version=VERSION,
        description="REST admin API of the Edgeport hub (models, blobs, devices, services) "
        "and the pull side of the OCI distribution API under /v2/. Every call needs an API token "
        "(Authorization: Bearer TOKEN; OCI clients: any user name, the token as password) whose role "
        "(viewer, deployer, admin) is at least the operation's x-required-role; those with "
        "`security: []` are open.",
    )
    app.state.services = services
    install_error_handlers(app)
    for module in ROUTER_MODULES:
        app.include_router(module.router)
    app.add_middleware(RequestLimits)  # body size and JSON depth, before any route parses a body
    app.add_middleware(BlobFastPath, services=services)  # fleets pulling one model at once
    # Outside everything that answers: no route, limit or fast path speaks before the caller is known.
    routes = [r for r in app.router.routes if hasattr(r, "path")]  # the app's own: /openapi.json, /docs
    routes += [r for module in ROUTER_MODULES for r in module.router.routes]  # full paths, in routing order
    app.add_middleware(AccessControl, access=services.access, routes=routes)
    metrics.install_metrics(app, services)  # outermost: times every request, fast path included
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = access.document_security(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
