"""The dashboard's routes: page shells at `/` and `/ui/...`, the fragments they poll, and their static files.

Shells carry no data (they name the fragments to load), so the hub's access gate (hub/api/auth.py)
lets anyone load them; every fragment is a read like any other and needs a viewer's token, which
the page script sends as `Authorization: Bearer` from the token the viewer logged in with. The
gate's 401 sends the page back to its login.
"""

from __future__ import annotations

import json
from collections import defaultdict
from html import escape
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response

from hub.api.deps import Services
from hub.buckets import check_window
from hub.dashboard import charts, pages
from hub.errors import BadInput, NotFound
from hub.names import parse_duration, parse_target, validate_fleet_name

router = APIRouter(include_in_schema=False)  # pages for people, not part of the REST API's document

STATIC_TYPES = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
# What a device page charts: (title, metric). Counters (*_total) are drawn as rates per second.
DEVICE_CHARTS = (
    ("Requests/s", "runtime.requests_total"),
    ("Errors/s", "runtime.errors_total"),
    ("Latency p50 (ms)", "runtime.latency_p50_ms"),
    ("Latency p99 (ms)", "runtime.latency_p99_ms"),
    ("Device CPU %", "device.cpu_percent"),
    ("Agent CPU %", "agent.cpu_percent"),
    ("Runtime memory (bytes)", "runtime.rss_bytes"),
    ("Agent memory (bytes)", "agent.rss_bytes"),
)
MAX_SELECTOR = 1024


DeviceName = Annotated[str, Path(max_length=255, description="the device's name")]
ServiceName = Annotated[str, Path(max_length=255, description="the service's name")]
Selector = Annotated[str, Query(max_length=MAX_SELECTOR, description="a target selector: name or k=v[,k=v]")]
Page = Annotated[int, Query(ge=0, le=100_000)]
Window = Annotated[str, Query(max_length=16, description="a duration: 90s, 30m, 1h, 2d")]


def _html(text: str) -> HTMLResponse:
    # Fragments change every poll: never let a cache answer for the hub.
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


# ---- page shells ----


@router.get("/", response_class=HTMLResponse)
def fleet_page(selector: Selector = "", page: Page = 0) -> HTMLResponse:
    """The fleet: counts by state and the device table, filterable by selector."""
    query = urlencode({"selector": selector, "page": page})
    body = pages.fleet_controls(selector) + pages.live_part("fragment", f"/ui/fragments/fleet?{query}")
    return _html(pages.shell(title="Fleet", section="fleet", body=body))


@router.get("/ui/login", response_class=HTMLResponse)
def login_page() -> HTMLResponse:
    """The token form."""
    return _html(pages.login_page())


@router.get("/ui/devices/{name}", response_class=HTMLResponse)
def device_page(name: DeviceName, since: Window = "1h", every: Window = "1m") -> HTMLResponse:
    """One device: inventory, services, log tail, charts."""
    name = validate_fleet_name("device", name)
    _window(since, every)
    charts_query = urlencode({"since": since, "every": every})
    body = (
        pages.live_part("fragment", f"/ui/fragments/devices/{quote(name)}", 3000)
        + pages.window_picker(since, every)
        + pages.live_part("charts", f"/ui/fragments/devices/{quote(name)}/charts?{charts_query}", 10_000)
    )
    return _html(pages.shell(title=name, section="fleet", body=body))


@router.get("/ui/services", response_class=HTMLResponse)
def services_page() -> HTMLResponse:
    """Every service and its devices by phase."""
    return _html(pages.shell(title="Services", section="services",
                             body=pages.live_part("fragment", "/ui/fragments/services")))


@router.get("/ui/services/{name}", response_class=HTMLResponse)
def service_page(name: ServiceName) -> HTMLResponse:
    """One service: the per-device phase grid, scoring URIs, its rollout."""
    name = validate_fleet_name("service", name)
    body = pages.live_part("fragment", f"/ui/fragments/services/{quote(name)}")
    return _html(pages.shell(title=name, section="services", body=body))


@router.get("/ui/registry", response_class=HTMLResponse)
def registry_page() -> HTMLResponse:
    """Models, versions, files, tags; stored profiles."""
    return _html(pages.shell(title="Registry", section="registry",
                             body=pages.live_part("fragment", "/ui/fragments/registry", 10_000)))


@router.get("/ui/static/{filename}")
def static_file(filename: Annotated[str, Path(max_length=64)]) -> Response:
    """The page script and style sheet, from the installed package (nothing comes from elsewhere)."""
    media_type = STATIC_TYPES.get(filename)
    if media_type is None:
        raise NotFound(f"no dashboard file {filename!r}")
    content = resources.files("hub.dashboard").joinpath("static", filename).read_bytes()
    return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})


# ---- fragments (need a token) ----


@router.get("/ui/fragments/fleet", response_class=HTMLResponse)
def fleet_fragment(services: Services, selector: Selector = "", page: Page = 0) -> HTMLResponse:
    """Counts by state and one page of the device table."""
    selector = selector.strip()
    # Counting needs only each device's standing (one read of the last commit, never waiting for the ingest
    # writer); the full rows are read for the page shown, not for the whole fleet.
    if selector:
        try:
            parse_target(selector)
        except BadInput as exc:
            return _html(f"<p class=\"note error\">{escape(exc.message)}</p>")
        standings = services.fleet.select_standings(selector)  # a target never picks a revoked device
    else:
        standings = services.fleet.standings()
    standings.sort(key=lambda r: r["id"])
    start = page * pages.FLEET_PAGE_SIZE
    shown = []
    for r in standings[start:start + pages.FLEET_PAGE_SIZE]:
        try:
            shown.append(services.fleet.show(r["id"]))
        except NotFound:  # deleted since the standings were read
            continue
    services_on: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for view in services.deployments.list():
        for d in view["devices"]:
            services_on[d["device"]].append((view["name"], d["phase"]))
    return _html(pages.fleet_fragment(standings, shown, services_on, selector=selector, page=page))


@router.get("/ui/fragments/devices/{name}", response_class=HTMLResponse)
def device_fragment(name: DeviceName, services: Services) -> HTMLResponse:
    """Inventory, services with generation and phase, each service's recent log lines."""
    device = services.fleet.show(validate_fleet_name("device", name))
    running = services.deployments.device_services(device["name"])
    logs: dict[str, list[str]] = {}
    for s in running:
        try:
            view = services.deployments.show(s["service"])
        except NotFound:  # deleted since the status was stored
            continue
        for d in view["devices"]:
            if d["device"] == device["name"]:
                logs[s["service"]] = list(d["log_tail"])[-20:]
                s["scoring_uri"] = s.get("scoring_uri") or d["scoring_uri"]
    return _html(pages.device_fragment(device, running, logs))


@router.get("/ui/fragments/devices/{name}/charts", response_class=HTMLResponse)
def device_charts(
    name: DeviceName, services: Services, since: Window = "1h", every: Window = "1m"
) -> HTMLResponse:
    """The device's runtime and system figures over time, as SVG."""
    device = services.fleet.show(validate_fleet_name("device", name))["name"]
    since_s, every_s = _window(since, every)
    drawn = [
        charts.svg_chart(
            title,
            services.telemetry.aggregate(devices=[device], metric=metric, since_s=since_s, every_s=every_s),
            chart_id="chart-" + metric.replace(".", "-"),
        )
        for title, metric in DEVICE_CHARTS
    ]
    return _html(pages.charts_fragment(drawn, since=since, every=every))


@router.get("/ui/fragments/services", response_class=HTMLResponse)
def services_fragment(services: Services) -> HTMLResponse:
    """Every service with its state and devices by phase."""
    return _html(pages.services_fragment(services.deployments.list()))


@router.get("/ui/fragments/services/{name}", response_class=HTMLResponse)
def service_fragment(name: ServiceName, services: Services) -> HTMLResponse:
    """One service's phase grid, URIs and rollout panel."""
    return _html(pages.service_fragment(services.deployments.show(validate_fleet_name("service", name))))


@router.get("/ui/fragments/registry", response_class=HTMLResponse)
def registry_fragment(services: Services) -> HTMLResponse:
    """Models with versions, files and tags; the newest stored profiles."""
    versions = [v.to_json() for v in services.registry.list_versions()]
    profiles = [
        {**p, "summary": _profile_summary(p["result"])} for p in services.telemetry.recent_profiles(limit=20)
    ]
    return _html(pages.registry_fragment(versions, profiles))


def _profile_summary(result: dict[str, Any]) -> str:
    shown = {k: result[k] for k in ("rps", "p50Ms", "p99Ms", "executionProvider", "message") if k in result}
    return json.dumps(shown)[:200]


def _window(since: str, every: str) -> tuple[int, int]:
    """Seconds of a chart window and bucket width, checked (BadInput names the bad one)."""
    since_s, every_s = parse_duration(since), parse_duration(every)
    check_window(since_s, every_s)
    return since_s, every_s
