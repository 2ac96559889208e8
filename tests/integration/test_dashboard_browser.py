"""The dashboard in a real headless Chromium: log in, see two simulated devices, deploy, watch the phases change
live, open a device's charts. Everything real: `hub serve`, two `agent run` processes on simulated hardware,
a real runtime per device, Debian's chromium driven by playwright. The screenshots docs/dashboard.md shows are
taken here: `EDGEPORT_SCREENSHOT_DIR=docs/img python3 -m pytest tests/integration/test_dashboard_browser.py`.

Also checks, on the same fleet, what the dashboard's figures stand on: `/metrics` of the hub, of a runtime and
of an agent run with --metrics-port parse with the Prometheus text parser, and `hub device|service telemetry
--every` print buckets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulators.profiles import PROFILES
from tests.integration.control_support import start_control_hub
from tests.integration.registry_support import cli_env
from tests.support import PYTHON, REPO, Processes, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEVICES = (("edge-1", "iot-edge"), ("vm-1", "cloud-vm"))
# Where the screenshots go: docs/img/ when refreshing the ones the docs show
# (EDGEPORT_SCREENSHOT_DIR=docs/img), else the test's own temporary folder, so a test run leaves the
# checkout as it was.
SCREENSHOT_DIR_ENV = "EDGEPORT_SCREENSHOT_DIR"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
]


def _hub(url: str, *args: str) -> str:
    """Run the `hub` CLI against `url`; its stdout (fails the test, with stderr, on a non-zero exit)."""
    done = subprocess.run([PYTHON, "-m", "hub", *args, "--hub", url], cwd=REPO, env=cli_env(url),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"hub {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _families(url: str, token: str | None = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET a /metrics page (with a bearer token, for the hub) and parse it with prometheus_client's parser."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        text = r.read().decode()
    return {
        f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)
    }


def _score_until(uris: list[str], stop: threading.Event) -> None:
    """Score a digits row on every device, ten times a second, until `stop` is set."""
    body = json.dumps({"data": [[0.0] * 64]}).encode()
    while not stop.wait(0.1):
        for uri in uris:
            request = urllib.request.Request(uri, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200


def test_log_in_see_devices_deploy_watch_phases_and_open_a_chart(
    processes: Processes, tmp_path: Path, digits_model: Path
) -> None:
    from playwright.sync_api import sync_playwright

    hub = start_control_hub(processes, tmp_path / "hub", extra=["--telemetry-interval", "2"])
    agent_metrics_port = free_port()
    address = hub.url.removeprefix("http://")
    _hub(hub.url, "model", "register", "-n", "digits", "-p", str(digits_model), "--tag", "task=digits")
    for name, profile in DEVICES:
        token = json.loads(_hub(hub.url, "device", "enroll", name, "--label", "fleet=ui", "--label",
                                f"profile={profile}", "--output", "json"))["token"]  # fmt: skip
        profile_file = tmp_path / f"{name}.profile.json"
        profile_file.write_text(PROFILES[profile].to_json())
        metrics = ["--metrics-port", str(agent_metrics_port)] if name == "edge-1" else []  # off by default
        processes.start([PYTHON, "-m", "agent", "run", "--hub", address, "--token", token, "--data-dir",
                         str(tmp_path / name), "--profile", str(profile_file), *metrics], name=name,
                        cwd=REPO)  # fmt: skip
    viewer = json.loads(_hub(hub.url, "token", "create", "--name", "dashboard-viewer", "--role", "viewer",
                             "--output", "json"))["token"]  # fmt: skip
    shots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path / "screenshots")
    shots = shots if shots.is_absolute() else REPO / shots
    shots.mkdir(parents=True, exist_ok=True)
    stop_traffic = threading.Event()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(hub.url + "/")
            page.wait_for_url("**/ui/login**")  # no token in this tab yet: the page sends us to log in
            page.fill("#token", "not-a-token-of-this-hub")
            page.click("button[type=submit]")
            page.wait_for_url("**/ui/login?**reason=refused**")  # the hub answered 401: back to the login
            assert "refused" in page.inner_text("#login-note")
            page.fill("#token", viewer)
            page.click("button[type=submit]")
            page.wait_for_url(hub.url + "/")
            for name, _ in DEVICES:
                page.wait_for_selector(f'tr[data-device="{name}"] .presence.online', timeout=60_000)
            assert page.inner_text('[data-count="online"] b') == "2"
            assert page.evaluate("sessionStorage.getItem('edgeport.token')") == viewer

            # Note every phase the table shows from now on, and mark the document: a reload would lose the mark.
            page.evaluate("""() => {
                window.__sameDocument = true;
                window.__phases = [];
                const note = () => document.querySelectorAll('td.svc [data-phase]').forEach(e => {
                    const seen = e.closest('tr').dataset.device + ':' + e.dataset.phase;
                    if (!window.__phases.includes(seen)) window.__phases.push(seen);
                });
                new MutationObserver(note).observe(document.getElementById('fragment'), {childList: true,
                                                                                          subtree: true});
            }""")
            assert page.locator("td.svc [data-phase]").count() == 0
            dc = tmp_path / "deploymentconfig.json"
            dc.write_text(json.dumps({"computeType": "edge"}))
            deploy = subprocess.Popen(
                [PYTHON, "-m", "hub", "deploy", "-n", "digits-svc", "-m", "digits:1", "--dc", str(dc), "--target",
                 "fleet=ui", "--hub", hub.url], cwd=REPO, env=cli_env(hub.url), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            for name, _ in DEVICES:
                page.wait_for_selector(f'tr[data-device="{name}"] td.svc [data-phase="Healthy"]', timeout=120_000)
            out, _ = deploy.communicate(timeout=60)
            assert deploy.returncode == 0, out.decode()
            assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
            seen = page.evaluate("window.__phases")
            assert {f"{name}:Healthy" for name, _ in DEVICES} <= set(seen), seen
            page.screenshot(path=str(shots / "dashboard-fleet.png"))
            # The selector filter narrows the table in place (the same grammar as a deploy target).
            page.fill("#filter input[name=selector]", "profile=cloud-vm")
            page.click("#filter button[type=submit]")
            page.wait_for_selector('tr[data-device="edge-1"]', state="detached")
            assert page.locator('tr[data-device="vm-1"]').count() == 1
            assert page.evaluate("window.__sameDocument") is True
            page.fill("#filter input[name=selector]", "")
            page.click("#filter button[type=submit]")
            page.wait_for_selector('tr[data-device="edge-1"]')

            page.click('tr[data-device="edge-1"] a[href="/ui/services/digits-svc"]')
            page.wait_for_selector('.grid .cell[data-phase="Healthy"][data-device="vm-1"]')
            assert page.locator('#rollout-panel[data-rollout="none"]').count() == 1
            shown = json.loads(_hub(hub.url, "service", "show", "digits-svc", "--output", "json"))
            uris = [d["scoring_uri"] for d in shown["devices"]]
            assert all(page.locator(f"code:text-is('{uri}')").count() == 1 for uri in uris)
            page.screenshot(path=str(shots / "dashboard-service.png"))

            # Traffic for the charts while the device page is open: a runtime reports latency only for
            # the requests it served since its last report.
            traffic = threading.Thread(target=_score_until, args=(uris, stop_traffic), daemon=True)
            traffic.start()
            page.goto(hub.url + "/")
            page.click('tr[data-device="edge-1"] td:first-child a')
            page.wait_for_url("**/ui/devices/edge-1")
            page.select_option("#window", "5m/5s")
            page.wait_for_selector("#chart-device-cpu_percent svg", timeout=30_000)
            # A line needs two buckets of the runtime's figures (it reports every 2 s here).
            page.wait_for_selector("#chart-runtime-latency_p50_ms svg polyline[points*=' ']", timeout=60_000)
            assert page.locator('tr[data-service="digits-svc"] [data-phase="Healthy"]').count() == 1
            page.screenshot(path=str(shots / "dashboard-device.png"), full_page=True)

            page.click("header nav a[href='/ui/registry']")
            page.wait_for_selector('tr[data-model="digits:1"]')
            page.screenshot(path=str(shots / "dashboard-registry.png"))
        finally:
            stop_traffic.set()
            browser.close()

    # What the charts stand on, from the command line.
    table = _hub(hub.url, "device", "telemetry", "edge-1", "--metric", "device.cpu_percent", "--since", "15m",
                 "--every", "30s")  # fmt: skip
    assert table.splitlines()[0].startswith("device.cpu_percent, 30s buckets, 1 device(s)")
    assert "AVG" in table and len(table.splitlines()) >= 3
    across = json.loads(_hub(hub.url, "service", "telemetry", "digits-svc", "--metric", "p50_ms", "--since", "15m",
                             "--every", "1m", "--output", "json"))  # fmt: skip
    assert across["metric"] == "runtime.latency_p50_ms" and across["devices"] == 2 and across["buckets"]

    # /metrics of the hub and of a runtime parse as Prometheus text.
    hub_metrics = _families(hub.url + "/metrics", viewer)
    online = {lbl["transport"]: v for lbl, v in hub_metrics["edgeport_hub_devices_online"]}
    assert online["grpc"] == 2
    assert hub_metrics["edgeport_hub_desired_state_pushes"][0][1] >= 2
    assert hub_metrics["edgeport_hub_agent_messages_ingested"][0][1] > 0
    agent = _families(f"http://127.0.0.1:{agent_metrics_port}/metrics")
    assert {lbl["service"]: v for lbl, v in agent["edgeport_agent_runtime_up"]} == {"digits-svc": 1.0}
    assert agent["edgeport_agent_info"][0][0]["device"] == "edge-1"
    assert agent["edgeport_agent_outbox_pending_messages"][0][1] >= 0
    runtime_root = uris[0].rsplit("/", 1)[0]
    runtime = _families(runtime_root + "/metrics")
    assert runtime, "the runtime's /metrics parsed to nothing"
