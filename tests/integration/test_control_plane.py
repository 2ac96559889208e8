"""The whole deployment workflow end to end: a real hub and three real agents, all through the CLI (and the SDK).

enroll three devices -> deploy an entry-script service (key auth) and a no-code ONNX service by label to two
of them -> score on both through the reported URIs -> update to a new model version -> a broken generation
(init raises) rolls back while the devices keep answering -> SIGKILL an agent mid-download, restart it, and
see the pull resume where it stopped -> delete -> nothing left running.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from hub import Webservice, Workspace
from simulators.models import digits_data
from tests.integration.control_support import ThrottledProxy, start_control_hub
from tests.integration.registry_support import auth, hub_cli, hub_token
from tests.support import PYTHON, REPO, Processes, free_port, wait_for

SCORE_PY = '''\
import json, os
import numpy as np
import onnxruntime as ort

def init():
    global sess, notes
    folder = os.environ["AZUREML_MODEL_DIR"]
    sess = ort.InferenceSession(os.path.join(folder, "model.onnx"), providers=["CPUExecutionProvider"])
    path = os.path.join(folder, "NOTES.txt")
    notes = open(path).read().strip() if os.path.exists(path) else ""

def run(raw):
    data = np.asarray(json.loads(raw)["data"], dtype=np.float32)
    return {"label": sess.run(None, {"X": data})[0].tolist(), "notes": notes}
'''
BROKEN_PY = 'def init():\n    raise RuntimeError("broken on purpose")\n\ndef run(raw):\n    return raw\n'
BIG_BLOB = 8 * 1024 * 1024
PULL_RATE = 2 * 1024 * 1024  # bytes/s through the artifact proxy: the big pull takes ~4 s, time to catch it


def _start_agent(processes: Processes, hub_port: int, data_dir: Path, name: str, token: str | None = None) -> Any:
    args = [PYTHON, "-m", "agent", "run", "--hub", f"127.0.0.1:{hub_port}", "--data-dir", str(data_dir),
            "--heartbeat-s", "2", *(["--token", token] if token else [])]
    return processes.start(args, name=name, cwd=REPO)


def _runtimes_under(root: Path) -> list[psutil.Process]:
    """Runtime processes whose command line points into `root` (the agents' data dirs)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "runtimes" in cmd and "serve" in cmd and str(root) in cmd:
            found.append(p)
    return found


def _ok(result: Any) -> Any:
    assert result.code == 0, f"exit {result.code}\nstdout:\n{result.out}\nstderr:\n{result.err}"
    return result


def _score(uri: str, row: list[float], key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(uri, json={"data": [row]}, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_control_plane_end_to_end(processes: Processes, tmp_path: Path, digits_model: Path) -> None:
    api_port = free_port()
    proxy = ThrottledProxy(api_port, PULL_RATE)  # agents pull artifacts through it (hub --artifact-url)
    try:
        _run(processes, tmp_path, digits_model, api_port, proxy)
    finally:
        proxy.close()


def _run(processes: Processes, tmp_path: Path, digits_model: Path, api_port: int, proxy: ThrottledProxy) -> None:
    start = time.monotonic()

    def step(what: str) -> None:  # printed; pytest shows it when the test fails
        print(f"[{time.monotonic() - start:6.1f}s] {what}", flush=True)

    hub = start_control_hub(processes, tmp_path / "hub", port=api_port,
                            extra=["--artifact-url", f"http://127.0.0.1:{proxy.port}", "--telemetry-interval", "1"])
    url = hub.url
    x_test, y_test = digits_data()
    row, label = x_test[0].tolist(), int(y_test[0])

    step("hub up")
    # ---- enroll three devices through the CLI; each agent exchanges its token once ----
    agents = {}
    for name, site in (("edge-a", "lab"), ("edge-b", "lab"), ("edge-c", "field")):
        token = _ok(hub_cli(url, "device", "enroll", name, "--label", f"site={site}", "--output", "json")).json()
        assert token["device"] == name and token["expires"]
        agents[name] = _start_agent(processes, api_port, tmp_path / name, name, token["token"])

    def all_online() -> bool:  # polled through the API directly: a CLI start per poll is slow on 2 cores
        devices = httpx.get(f"{url}/api/v1/devices", headers=auth(url), timeout=10).json()
        return len(devices) == 3 and all(d["online"] for d in devices)

    wait_for(all_online, timeout=30, interval=0.3, what="three agents online")
    shown = _ok(hub_cli(url, "device", "show", "edge-a", "--output", "json")).json()
    assert shown["hardware"]["cpuCount"] >= 1 and "CPUExecutionProvider" in shown["hardware"]["onnxProviders"]

    step("agents online")
    # ---- models and configs ----
    _ok(hub_cli(url, "model", "register", "-n", "digits", "-p", str(digits_model)))
    v2 = tmp_path / "digits-v2"
    v2.mkdir()
    (v2 / "model.onnx").write_bytes(digits_model.read_bytes())
    (v2 / "NOTES.txt").write_text("second cut\n")
    _ok(hub_cli(url, "model", "register", "-n", "digits", "-p", str(v2)))
    for folder, script in (("src", SCORE_PY), ("broken", BROKEN_PY)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "score.py").write_text(script)
        (tmp_path / f"{folder}-ic.json").write_text(json.dumps(
            {"entryScript": "score.py", "sourceDirectory": folder, "runtime": "python"}))
    dc = tmp_path / "dc.json"
    dc.write_text(json.dumps({"computeType": "edge", "authEnabled": True, "healthTimeoutSeconds": 30,
                              "containerResourceRequirements": {"cpu": 1, "memoryInGB": 0.5}}))

    step("models registered")
    # ---- an entry-script service and a no-code ONNX service, by label, to edge-a and edge-b ----
    scorer = _ok(hub_cli(url, "deploy", "-n", "scorer", "-m", "digits:1", "--ic", str(tmp_path / "src-ic.json"),
                         "--dc", str(dc), "--target", "site=lab", "--output", "json")).json()
    assert scorer["state"] == "Healthy" and [d["device"] for d in scorer["devices"]] == ["edge-a", "edge-b"]
    onnx = _ok(hub_cli(url, "deploy", "-n", "digits-onnx", "-m", "digits:1", "--target", "site=lab"))
    assert "is Healthy on 2 device(s)" in onnx.out and "edge-a: Healthy" in onnx.out  # live progress lines
    key = _ok(hub_cli(url, "service", "keys", "-n", "scorer", "--output", "json")).json()["primaryKey"]
    for d in scorer["devices"]:
        assert _score(d["scoring_uri"], row, key) == {"label": [label], "notes": ""}
        assert httpx.post(d["scoring_uri"], json={"data": [row]}, timeout=10).status_code == 401  # key required
    for d in _ok(hub_cli(url, "service", "show", "digits-onnx", "--output", "json")).json()["devices"]:
        assert d["phase"] == "Healthy" and _score(d["scoring_uri"], row)["label"] == [label]
    ws = Workspace(url, token=hub_token(url))
    assert Webservice(ws, "scorer").run({"data": [row]})["label"] == [label]  # SDK sends the key itself

    step("two services healthy and scored")
    # ---- update to version 2 (through the SDK): the new generation answers ----
    service = Webservice(ws, "scorer").update(models=["digits:2"]).wait_for_deployment()
    assert service.state == "Healthy" and service.generation == 2 and len(service.scoring_uris) == 2
    for uri in service.scoring_uris.values():
        assert _score(uri, row, key)["notes"] == "second cut"

    step("updated to v2")
    # ---- a broken generation: rolled back on both devices, which keep answering with generation 2 ----
    broken = hub_cli(url, "service", "update", "-n", "scorer", "--ic", str(tmp_path / "broken-ic.json"))
    assert broken.code == 1 and "RolledBack" in broken.err and "broken on purpose" in broken.err
    view = _ok(hub_cli(url, "service", "show", "scorer", "--output", "json")).json()
    assert view["generation"] == 3 and view["state"] == "Failed"
    for d in view["devices"]:
        assert d["phase"] == "RolledBack" and d["serving_generation"] == 2
        assert _score(d["scoring_uri"], row, key)["notes"] == "second cut"

    step("rolled back")
    logs = _ok(hub_cli(url, "service", "logs", "scorer", "--lines", "20", "--output", "json")).json()
    assert {entry["device"] for entry in logs} == {"edge-a", "edge-b"}
    assert all(entry["source"] == "live" and entry["lines"] for entry in logs)  # asked over the agents' links

    step("logs read")
    # ---- SIGKILL an agent mid-download; restarted, it resumes the pull where it stopped ----
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.onnx").write_bytes(digits_model.read_bytes())
    (big / "weights.bin").write_bytes(os.urandom(BIG_BLOB))
    _ok(hub_cli(url, "model", "register", "-n", "big", "-p", str(big)))
    _ok(hub_cli(url, "deploy", "-n", "big-svc", "-m", "big:1", "--target", "edge-c", "--no-wait"))
    partials = tmp_path / "edge-c"

    def partial_size() -> int:
        sizes = [p.stat().st_size for p in partials.rglob("*.partial")]
        return max(sizes) if sizes else 0

    wait_for(lambda: partial_size() >= BIG_BLOB // 8, timeout=30, interval=0.02, what="edge-c mid-download")
    processes.stop(agents["edge-c"], sig=signal.SIGKILL)
    held = partial_size()
    assert BIG_BLOB // 8 <= held < BIG_BLOB, held
    before = proxy.bytes_down
    agents["edge-c"] = _start_agent(processes, api_port, tmp_path / "edge-c", "edge-c-restarted")

    def big_healthy() -> bool:
        return httpx.get(f"{url}/api/v1/services/big-svc", headers=auth(url), timeout=10).json()["state"] == "Healthy"

    wait_for(big_healthy, timeout=60, interval=0.3, what="big-svc healthy after the agent restart")
    resumed = proxy.bytes_down - before
    assert resumed < BIG_BLOB - held + 512 * 1024, f"pulled {resumed} bytes again; {held} were already held"

    step("resumed after SIGKILL")
    # ---- telemetry arrived and is queryable: the agent's RSS, the runtimes' request counters ----
    def telemetry(**params: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{url}/api/v1/telemetry", params=params, headers=auth(url), timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    wait_for(lambda: telemetry(device="edge-a", metric="agent.rss_bytes"), timeout=15, what="agent telemetry")
    wait_for(lambda: telemetry(device="edge-a", service="scorer"), timeout=15, what="runtime telemetry")
    assert httpx.get(f"{url}/api/v1/telemetry", params={"limit": 0}, headers=auth(url), timeout=10).status_code == 400
    rss = _ok(hub_cli(url, "device", "telemetry", "edge-a", "--metric", "agent.rss_bytes", "--since", "10m",
                      "--output", "json")).json()
    assert rss and all(p["metric"] == "agent.rss_bytes" and p["value"] > 0 for p in rss)
    bad = hub_cli(url, "device", "telemetry", "edge-a", "--limit", "0")
    assert bad.code == 2 and "limit" in bad.err

    step("telemetry seen")
    # ---- delete everything: runtimes stop, nothing is left ----
    assert _runtimes_under(tmp_path), "runtimes should be running before the delete"
    for service in ("scorer", "digits-onnx", "big-svc"):
        _ok(hub_cli(url, "service", "delete", service))
    assert _ok(hub_cli(url, "service", "list", "--output", "json")).json() == []
    wait_for(lambda: not _runtimes_under(tmp_path), timeout=30, interval=0.2, what="every runtime stopped")
    step("services deleted, runtimes gone")
    _ok(hub_cli(url, "model", "delete", "digits:1"))  # no longer in use
    for proc in agents.values():
        assert processes.stop(proc) is not None
    step("agents stopped")
    assert not _runtimes_under(tmp_path)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])
                 and p.pid != hub.hub.proc.pid]
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
