"""The dashboard's pages and fragments over HTTP: the token gate, the fleet table, charts, escaping, static files."""

from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from hub.api.app import create_app
from hub.dashboard.charts import svg_chart
from hub.services import HubServices
from protos.edgeport.v1 import agent_pb2
from tests.unit.access_support import token_headers


def _client(hub: HubServices) -> TestClient:
    """A client of the hub's app that sends a viewer's token with every request unless told otherwise."""
    return TestClient(create_app(hub), headers=token_headers(hub, "viewer"))


def test_shells_load_for_anyone_but_fragments_need_a_bearer_token(hub: HubServices) -> None:
    client = TestClient(create_app(hub))  # no token
    page = client.get("/")
    assert page.status_code == 200 and 'data-src="/ui/fragments/fleet?selector=&amp;page=0"' in page.text
    assert '<script src="/ui/static/dashboard.js"' in page.text  # served by the hub: no CDN
    assert "sessionStorage" in client.get("/ui/login").text
    assert client.get("/ui/static/dashboard.js").status_code == 200
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        r = client.get("/ui/fragments/fleet", headers=headers)
        assert r.status_code == 401, headers  # the page script sends the viewer to the login page on 401
        assert "Bearer" in r.json()["error"]["message"]
    assert client.get("/ui/fragments/fleet", headers=token_headers(hub, "viewer")).status_code == 200


def test_static_files_come_from_the_package_and_nothing_else_is_served(hub: HubServices) -> None:
    client = _client(hub)
    js = client.get("/ui/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "Authorization" in js.text and "sessionStorage" in js.text
    assert client.get("/ui/static/dashboard.css").status_code == 200
    assert client.get("/ui/static/..%2Fpages.py").status_code == 404
    assert client.get("/ui/static/pages.py").status_code == 404


def test_fleet_table_counts_filters_by_selector_and_escapes_what_devices_report(hub: HubServices) -> None:
    hub.fleet.create_token("cam-01", {"site": "lab"}, 3600)
    hub.fleet.create_token("cam-02", {"site": "lab"}, 3600)
    hub.fleet.create_token("gw-01", {"site": "plant"}, 3600)
    # What a device reports is shown as text, never as markup.
    hostile = agent_pb2.HardwareInventory(arch="<script>alert(1)</script>", cpu_count=4)
    hub.fleet.device_connected("cam-02", agent_pb2.Hello(agent_version="<b>1</b>", hardware=hostile), "grpc")
    client = _client(hub)
    html = client.get("/ui/fragments/fleet").text
    assert all(f'data-device="{name}"' in html for name in ("cam-01", "cam-02", "gw-01"))
    assert '<div class="tile wait" data-count="pending"><b>2</b>' in html
    assert '<div class="tile ok" data-count="online"><b>1</b>' in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;1&lt;/b&gt;" in html
    lab = client.get("/ui/fragments/fleet", params={"selector": "site=lab"}).text
    assert 'data-device="cam-01"' in lab and 'data-device="gw-01"' not in lab
    bad = client.get("/ui/fragments/fleet", params={"selector": "site=lab,,"})
    assert bad.status_code == 200 and 'class="note error"' in bad.text and "invalid target" in bad.text


def test_device_page_and_charts_draw_svg_from_the_aggregate_query(hub: HubServices) -> None:
    hub.fleet.create_token("cam-01", {"site": "lab"}, 3600)
    now_ms = int(time.time() * 1000)
    rows = [("cam-01", "", "device.cpu_percent", float(i % 10), now_ms - i * 5000, "{}") for i in range(60)]
    hub.telemetry.store.insert(rows)
    client = _client(hub)
    page = client.get("/ui/devices/cam-01")
    assert page.status_code == 200 and "/ui/fragments/devices/cam-01/charts?since=1h&amp;every=1m" in page.text
    facts = client.get("/ui/fragments/devices/cam-01").text
    assert "<h1>cam-01</h1>" in facts and "no service on this device" in facts
    charts = client.get("/ui/fragments/devices/cam-01/charts", params={"since": "15m", "every": "15s"}).text
    assert charts.count("<figure") == 8
    cpu = charts.split('id="chart-device-cpu_percent"')[1].split("</figure>")[0]
    assert "<polyline" in cpu and "<polygon" in cpu
    assert "no data in this window" in charts.split('id="chart-runtime-requests_total"')[1].split("</figure>")[0]
    too_fine = client.get("/ui/fragments/devices/cam-01/charts", params={"since": "7d", "every": "1s"})
    assert too_fine.status_code == 400 and "at most 2000" in too_fine.json()["error"]["message"]
    assert client.get("/ui/fragments/devices/nobody").status_code == 404
    assert client.get("/ui/devices/bad%20name").status_code == 400


def test_service_and_registry_pages_say_there_is_nothing_yet(hub: HubServices) -> None:
    client = _client(hub)
    assert "no service deployed yet" in client.get("/ui/fragments/services").text
    assert client.get("/ui/fragments/services/scorer").status_code == 404
    registry = client.get("/ui/fragments/registry").text
    assert "no model registered yet" in registry and "no profile stored" in registry
    assert client.get("/ui/services/scorer").status_code == 200  # the shell; its fragment says 404


def test_fleet_table_pages_by_100_and_counts_the_whole_fleet(hub: HubServices) -> None:
    for i in range(105):
        hub.fleet.create_token(f"dev-{i:03d}", {"site": "lab"}, 3600)
    client = _client(hub)
    first = client.get("/ui/fragments/fleet").text
    second = client.get("/ui/fragments/fleet", params={"page": 1}).text
    assert first.count("<tr data-device=") == 100 and second.count("<tr data-device=") == 5
    assert 'data-device="dev-000"' in first and 'data-device="dev-104"' in second
    assert '<div class="tile wait" data-count="pending"><b>105</b>' in second
    assert "page 1 of 2" in first and 'data-page-link="1"' in first


def test_chart_axis_labels_tell_close_values_apart() -> None:
    aggregate = {"metric": "runtime.requests_total", "unit": "per second", "since_ms": 0, "until_ms": 10_000,
                 "every_s": 5.0, "buckets": [{"at_ms": 0, "min": 9.776, "avg": 9.776, "max": 9.776},
                                             {"at_ms": 5000, "min": 9.784, "avg": 9.784, "max": 9.784}]}  # fmt: skip
    svg = svg_chart("Requests/s", aggregate, chart_id="c")
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', svg)
    labels = [label for label in labels if label != "now"]
    assert len(labels) == 3 and len(set(labels)) == 3, labels
