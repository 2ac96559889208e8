"""The dashboard's HTML: page shells and the fragments the page script polls, rendered on the hub.

A page is a shell (navigation and an empty `<main>`) that names the fragment URL it shows. The
script (static/dashboard.js) fetches that fragment with the viewer's token and swaps it in,
again every few seconds: the pages stay live without a reload, and all HTML, escaping included,
is made here, in one place, from the same views the REST API returns.
"""

from __future__ import annotations

import calendar
import time
from collections import Counter
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

PHASE_CLASS = {
    "Healthy": "ok",
    "Failed": "bad",
    "RolledBack": "bad",
    "Restarting": "warn",
    "Pending": "wait",
    "Pulling": "busy",
    "Starting": "busy",
    "Removed": "wait",
}
NAV = (("fleet", "/", "Fleet"), ("services", "/ui/services", "Services"), ("registry", "/ui/registry", "Registry"))
FLEET_PAGE_SIZE = 100


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def live_part(part_id: str, src: str, every_ms: int = 2000) -> str:
    """A part of a page the script fills from `src` (a fragment URL) and refreshes every `every_ms`."""
    return (f'<section id="{_e(part_id)}" data-src="{_e(src)}" data-every="{every_ms}" aria-live="polite">'
            '<p class="empty">loading…</p></section>')


def shell(*, title: str, section: str, body: str) -> str:
    """A page: the header with navigation and live indicator, then `body` (controls and live parts)."""
    here = ' class="here"'
    links = "".join(f'<a href="{href}"{here if key == section else ""}>{label}</a>' for key, href, label in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · Edgeport</title><link rel="stylesheet" href="/ui/static/dashboard.css">
<script src="/ui/static/dashboard.js" defer></script></head>
<body data-page="{_e(section)}">
<header><span class="brand">Edgeport</span><nav>{links}</nav>
<span class="live" id="live" title="the page updates by itself">live</span>
<button type="button" id="logout">Log out</button></header>
<main>{body}</main>
</body></html>"""


def fleet_controls(selector: str) -> str:
    """The selector filter above the fleet table (same grammar as a deploy target: k=v[,k=v] or a name)."""
    return (
        '<form id="filter" class="controls"><input name="selector" placeholder="filter: site=lab,kind=camera or a name"'
        f' value="{_e(selector)}" aria-label="device selector"><button type="submit">Filter</button></form>'
    )


CHART_WINDOWS = (("5m", "5s"), ("15m", "15s"), ("1h", "1m"), ("6h", "5m"), ("1d", "15m"), ("7d", "1h"))


def window_picker(since: str, every: str) -> str:
    """The charts' window and bucket width."""
    options = "".join(
        f'<option value="{s}/{e}"{" selected" if (s, e) == (since, every) else ""}>last {s} · {e} buckets</option>'
        for s, e in CHART_WINDOWS
    )
    return f'<div class="controls"><select id="window" aria-label="chart window">{options}</select></div>'


def login_page() -> str:
    """The login form: the token is kept in this tab's sessionStorage and sent as `Authorization: Bearer`."""
    return """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · Edgeport</title>
<link rel="stylesheet" href="/ui/static/dashboard.css"><script src="/ui/static/dashboard.js" defer></script></head>
<body data-page="login"><main class="login">
<h1>Edgeport</h1>
<form id="login-form">
<label for="token">Hub API token</label>
<input id="token" name="token" type="password" autocomplete="off" required placeholder="paste a token">
<button type="submit">Log in</button>
<p class="note" id="login-note">The token stays in this browser tab (sessionStorage) and goes with every call
to the hub as <code>Authorization: Bearer</code>. A viewer token can look.</p>
</form></main></body></html>"""


def _ago(iso: str | None, now: float) -> str:
    if not iso:
        return "never"
    seconds = max(0, int(now - calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def hardware_class(hardware: dict[str, Any] | None) -> tuple[str, str]:
    """(class, accelerators) of an inventory: `x86_64 · 8 CPU · 16 GiB` and `gpu NVIDIA T4` (or '—')."""
    if not hardware:
        return "unknown", "—"
    parts = [hardware.get("profile") or "", hardware.get("arch") or ""]
    if hardware.get("cpuCount"):
        parts.append(f"{hardware['cpuCount']} CPU")
    memory = int(hardware.get("memoryBytes") or 0)
    if memory:
        parts.append(f"{memory / 2**30:.0f} GiB")
    accelerators = ", ".join(
        f"{a.get('kind', '')} {a.get('name', '')}".strip() for a in hardware.get("accelerators") or []
    )
    return " · ".join(p for p in parts if p) or "unknown", accelerators or "—"


def _phase(phase: str) -> str:
    return f'<span class="phase {PHASE_CLASS.get(phase, "wait")}" data-phase="{_e(phase)}">{_e(phase)}</span>'


def _labels(labels: dict[str, str]) -> str:
    return " ".join(f'<span class="label">{_e(k)}={_e(v)}</span>' for k, v in sorted(labels.items())) or "—"


def fleet_fragment(
    standings: list[dict[str, Any]],
    shown: list[dict[str, Any]],
    services_on: dict[str, list[tuple[str, str]]],
    *,
    selector: str,
    page: int,
    now: float | None = None,
) -> str:
    """Counts by state, then one page of the device table (Mender's columns).

    `standings`: every device the selector picks (`id`, `state`, `online`: counted); `shown`: the public
    views of this page's devices; `services_on`: device -> [(service, phase)].
    """
    now = time.time() if now is None else now
    total = len(standings)
    counts = Counter("revoked" if d["state"] == "revoked" else "online" if d["online"] else
                     "pending" if d["state"] == "pending" else "offline" for d in standings)
    phases = Counter(phase for d in standings for _, phase in services_on.get(d["id"], []))
    tiles = "".join(
        f'<div class="tile {cls}" data-count="{key}"><b>{counts.get(key, 0)}</b>{label}</div>'
        for key, cls, label in (("online", "ok", "online"), ("offline", "bad", "offline"),
                                ("pending", "wait", "not enrolled"), ("revoked", "wait", "revoked"))
    )
    tiles += "".join(
        f'<div class="tile {PHASE_CLASS.get(p, "wait")}" data-phase-count="{_e(p)}"><b>{n}</b>{_e(p)}</div>'
        for p, n in sorted(phases.items())
    )
    rows = []
    for d in shown:
        klass, accelerators = hardware_class(d.get("hardware"))
        presence = "revoked" if d["state"] == "revoked" else "online" if d["online"] else "offline"
        transport = f' <small>{_e(d["transport"])}</small>' if d["online"] and d.get("transport") else ""
        on = services_on.get(d["name"], [])
        svc = " ".join(f'<a href="/ui/services/{quote(s)}">{_e(s)}</a> {_phase(p)}' for s, p in on) or "—"
        rows.append(
            f'<tr data-device="{_e(d["name"])}"><td><a href="/ui/devices/{quote(d["name"])}">{_e(d["name"])}</a></td>'
            f"<td>{_labels(d['labels'])}</td><td>{_e(klass)}</td><td>{_e(accelerators)}</td>"
            f"<td>{_e(d.get('agent_version') or '—')}</td><td>{_e(_ago(d.get('last_seen'), now))}</td>"
            f'<td><span class="presence {presence}">{presence}</span>{transport}</td><td class="svc">{svc}</td></tr>'
        )
    pages = max(1, -(-total // FLEET_PAGE_SIZE))
    pager = ""
    if pages > 1:
        def link(p: int, text: str) -> str:
            query = urlencode({"selector": selector, "page": p})
            return f'<a href="/?{query}" data-page-link="{p}">{text}</a>'

        pager = '<p class="pager">' + (link(page - 1, "← previous") if page > 0 else "") + (
            f" page {page + 1} of {pages} " + (link(page + 1, "next →") if page + 1 < pages else "")
        ) + "</p>"
    head = "".join(f"<th>{h}</th>" for h in ("Device", "Labels", "Hardware", "Accelerators", "Agent",
                                            "Last seen", "Status", "Services"))
    nothing = f'<tr><td colspan="8" class="empty">no device matches {_e(selector or "the fleet")}</td></tr>'
    body = "".join(rows) or nothing
    return (f'<section class="tiles">{tiles}</section><p class="count">{total} device{"s" if total != 1 else ""}'
            f'{" matching " + _e(selector) if selector else ""}</p>'
            f'<table class="fleet"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{pager}')


def device_fragment(device: dict[str, Any], services: list[dict[str, Any]], logs: dict[str, list[str]],
                    *, now: float | None = None) -> str:
    """Inventory, services with generation and phase, and each service's recent log lines."""
    now = time.time() if now is None else now
    hardware = device.get("hardware") or {}
    klass, accelerators = hardware_class(hardware)
    presence = "revoked" if device["state"] == "revoked" else "online" if device["online"] else "offline"
    facts = [
        ("Status", f'<span class="presence {presence}">{presence}</span> {_e(device.get("transport") or "")}'),
        ("Labels", _labels(device["labels"])),
        ("Hardware", _e(klass)),
        ("Accelerators", _e(accelerators)),
        ("OS", _e(hardware.get("os") or "—")),
        ("Python", _e(hardware.get("python") or "—")),
        ("onnxruntime providers", _e(", ".join(hardware.get("onnxProviders") or []) or "—")),
        ("Agent", _e(device.get("agent_version") or "—")),
        ("Last seen", _e(_ago(device.get("last_seen"), now))),
        ("Uptime", _e(f"{device['uptime_s']} s" if device.get("uptime_s") else "—")),
        ("Desired / applied revision", f"{_e(device.get('desired_revision'))} / {_e(device.get('applied_revision'))}"),
    ]
    inventory = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    rows = "".join(
        f'<tr data-service="{_e(s["service"])}"><td><a href="/ui/services/{quote(s["service"])}">{_e(s["service"])}'
        f"</a></td><td>{_e(s['generation'])}</td><td>{_phase(s['phase'])}</td>"
        f"<td>{_e(s.get('scoring_uri') or '—')}</td></tr>"
        for s in services
    ) or '<tr><td colspan="4" class="empty">no service on this device</td></tr>'
    tails = "".join(
        f'<h3>{_e(name)}</h3><pre class="log">{_e(chr(10).join(lines))}</pre>'
        for name, lines in logs.items()
        if lines
    ) or '<p class="empty">none: a device sends its runtime\'s last lines when a start or a health check fails</p>'
    return (
        f'<h1>{_e(device["name"])}</h1><div class="cols"><section><h2>Inventory</h2><table class="facts">{inventory}'
        f'</table></section><section><h2>Services</h2><table><thead><tr><th>Service</th><th>Generation</th>'
        f"<th>Phase</th><th>Scoring URI</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<h2>Last log lines reported</h2>{tails}</section></div>"
    )


def charts_fragment(charts: list[str], *, since: str, every: str) -> str:
    """The chart grid, with the window it shows."""
    return (f'<h2>Charts</h2><p class="window">last {_e(since)}, {_e(every)} buckets: band = min..max across'
            f' services, line = average</p><div class="charts">{"".join(charts)}</div>')


def services_fragment(views: list[dict[str, Any]]) -> str:
    """Every service with its state and counts of devices by phase."""
    rows = []
    for v in views:
        phases = Counter(d["phase"] for d in v["devices"])
        rows.append(
            f'<tr data-service="{_e(v["name"])}"><td><a href="/ui/services/{quote(v["name"])}">{_e(v["name"])}</a></td>'
            f"<td>{_phase(v['state'])}</td><td>{_e(v['generation'])}</td><td>{_e(v['target'])}</td>"
            f"<td>{' '.join(f'{_phase(p)} {n}' for p, n in sorted(phases.items())) or '—'}</td></tr>"
        )
    body = "".join(rows) or '<tr><td colspan="5" class="empty">no service deployed yet</td></tr>'
    return ("<h1>Services</h1><table><thead><tr><th>Service</th><th>State</th><th>Generation</th><th>Target</th>"
            f"<th>Devices by phase</th></tr></thead><tbody>{body}</tbody></table>")


def rollout_panel() -> str:
    """Where a service's rollout shows: its waves, each gate's live value against its threshold, why it aborted,
    and pause/resume/abort for a deployer. The hub does not stage rollouts yet (a deploy goes to every targeted
    device at once), so the panel says so; it will render the rollout view once the hub has one."""
    return ('<section class="rollout" id="rollout-panel" data-rollout="none"><h2>Rollout</h2>'
            '<p class="empty">no rollout: this generation went to every targeted device at once</p></section>')


def service_fragment(view: dict[str, Any]) -> str:
    """A service: state, models, per-device phase grid (pending / in progress / healthy / failed), URIs, rollout."""
    grid = "".join(
        f'<div class="cell {PHASE_CLASS.get(d["phase"], "wait")}" data-device="{_e(d["device"])}" '
        f'data-phase="{_e(d["phase"])}" title="{_e(d["message"])}"><a href="/ui/devices/{quote(d["device"])}">'
        f'{_e(d["device"])}</a><span>{_e(d["phase"])}</span></div>'
        for d in view["devices"]
    ) or '<p class="empty">the target selects no device</p>'
    uris = "".join(
        f"<tr><td>{_e(d['device'])}</td><td><code>{_e(d['scoring_uri'])}</code></td>"
        f"<td><code>{_e(d['swagger_uri'])}</code></td></tr>"
        for d in view["devices"] if d["scoring_uri"]
    ) or '<tr><td colspan="3" class="empty">no scoring URI reported yet</td></tr>'
    models = ", ".join(_e(m.get("id") or m.get("name") or m) if isinstance(m, dict) else _e(m) for m in view["models"])
    return (
        f'<h1>{_e(view["name"])} {_phase(view["state"])}</h1>'
        f'<p class="meta">generation {_e(view["generation"])} · target <code>{_e(view["target"])}</code> · models '
        f'{models} · auth {_e(view["auth"])} · updated {_e(view["updated"])}</p>'
        f'<h2>Devices by phase</h2><div class="grid">{grid}</div>{rollout_panel()}'
        f"<h2>Scoring URIs</h2><table><thead><tr><th>Device</th><th>Scoring URI</th><th>Swagger</th></tr></thead>"
        f"<tbody>{uris}</tbody></table>"
    )


def _files(files: list[dict[str, Any]]) -> str:
    return "".join(f"<div>{_e(f['path'])} <small>{f['size']} B</small></div>" for f in files)


def registry_fragment(versions: list[dict[str, Any]], profiles: list[dict[str, Any]]) -> str:
    """Models with their versions, files and tags; stored profiling results."""
    rows = "".join(
        f'<tr data-model="{_e(v["id"])}"><td>{_e(v["name"])}</td><td>{_e(v["version"])}</td>'
        f"<td>{_labels(v['tags'])}</td><td>{_files(v['files'])}</td><td>{_e(v['description'])}</td><td>{_e(v['created_at'])}</td></tr>"
        for v in versions
    ) or '<tr><td colspan="6" class="empty">no model registered yet</td></tr>'
    prof = "".join(
        f"<tr><td>{_e(p['device'])}</td><td>{_e(p['service'])}</td><td><code>{_e(p['summary'])}</code></td>"
        f"<td>{_e(time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(p['at_ms'] / 1000)))}</td></tr>"
        for p in profiles
    ) or '<tr><td colspan="4" class="empty">no profile stored</td></tr>'
    return (
        "<h1>Registry</h1><h2>Models</h2><table><thead><tr><th>Model</th><th>Version</th><th>Tags</th><th>Files</th>"
        f"<th>Description</th><th>Registered</th></tr></thead><tbody>{rows}</tbody></table>"
        "<h2>Stored profiles</h2><table><thead><tr><th>Device</th><th>Service</th><th>Result</th><th>At</th></tr>"
        f"</thead><tbody>{prof}</tbody></table>"
    )
