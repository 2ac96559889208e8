"""A real hub, the real `hub` command and the REST API refuse a stray comma in a target and an
enrollment token that would live for years: exit 2 / HTTP 400, one line naming what, nothing stored."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.control_support import start_control_hub
from tests.integration.registry_support import assert_one_line_error, auth, hub_cli
from tests.support import Processes


def _call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **auth(url)})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_target_and_token_lifetime_are_refused_everywhere(processes: Processes, tmp_path: Path) -> None:
    hub = start_control_hub(processes, tmp_path / "hub", insecure=True)
    url = hub.url
    assert _call(url, "POST", "/api/v1/devices", {"name": "cam-01", "labels": ["site=lab"]})[0] == 201
    (tmp_path / "model.onnx").write_bytes(b"not really onnx; deploy only records it")
    assert hub_cli(url, "model", "register", "-n", "digits", "-p", str(tmp_path / "model.onnx")).code == 0

    # The command line refuses before it sends anything.
    result = hub_cli(url, "deploy", "-n", "svc", "-m", "digits:1", "--target", "site=lab,", "--no-wait")
    assert_one_line_error(result, 2, "invalid target 'site=lab,'", "after the comma at position 9")
    # The REST API refuses the same target with 400.
    request = {"name": "svc", "models": ["digits:1"], "target": "site=lab,"}
    status, body = _call(url, "POST", "/api/v1/services", request)
    assert status == 400 and "after the comma at position 9" in json.dumps(body), body
    assert _call(url, "GET", "/api/v1/services")[1] == []

    # An update to such a target changes nothing either.
    assert hub_cli(url, "deploy", "-n", "svc", "-m", "digits:1", "--target", "site=lab", "--no-wait").code == 0
    service_before = _call(url, "GET", "/api/v1/services/svc")[1]
    result = hub_cli(url, "service", "update", "-n", "svc", "--target", "site=lab,,x=y", "--no-wait")
    assert_one_line_error(result, 2, "invalid target 'site=lab,,x=y'", "before the comma at position 10")
    status, body = _call(url, "PATCH", "/api/v1/services/svc", {"target": "site=lab,"})
    assert status == 400, body
    service_after = _call(url, "GET", "/api/v1/services/svc")[1]
    assert (service_after["generation"], service_after["target"]) == (service_before["generation"], "site=lab")

    # Enrollment tokens live at most 30 days.
    devices_before = _call(url, "GET", "/api/v1/devices")[1]
    result = hub_cli(url, "device", "enroll", "cam-02", "--expires", "99999999d")
    assert_one_line_error(result, 2, "--expires '99999999d'", "at most 30d")
    status, body = _call(url, "POST", "/api/v1/devices", {"name": "cam-02", "expires": "99999999d"})
    assert status == 400 and "lifetime (expires) must be 1 s to 30 days" in json.dumps(body), body
    assert _call(url, "GET", "/api/v1/devices")[1] == devices_before
    assert hub_cli(url, "device", "enroll", "cam-02", "--expires", "30d").code == 0
